//! The InfluxDB 2 metric provider: Flux queries over `/api/v2/query` with a token and an
//! organization, and the parsing of the annotated CSV they answer with.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::Url;
use reqwest::header::HeaderValue;

use super::provider::{MetricProvider, QueryError};
use super::vendor::{self, Http};

/// Flagger's InfluxDB query timeout.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// The query of the availability check, as Flagger's.
pub const ONLINE_QUERY: &str = r#"from(bucket: "default") |> range(start: -2h)"#;

/// An InfluxDB 2 server (or InfluxDB Cloud).
pub struct InfluxDb {
    http: Http,
    query_url: Url,
    address: String,
    authorization: Option<HeaderValue>,
}

impl InfluxDb {
    /// A client for `address` (required). With a Secret, `token` and `org` are required.
    pub fn new(
        address: Option<&str>,
        credentials: Option<&BTreeMap<String, Vec<u8>>>,
        insecure_skip_verify: bool,
    ) -> Result<Self, String> {
        let base = vendor::address(address, None, "influxdb")?;
        let mut query_url = vendor::join(&base, "/api/v2/query");
        let mut authorization = None;
        if let Some(credentials) = credentials {
            let token = vendor::credential(credentials, "token", "influxdb")?;
            let org = vendor::credential(credentials, "org", "influxdb")?;
            authorization = Some(vendor::secret_header(&format!("Token {token}"), "token")?);
            query_url.query_pairs_mut().append_pair("org", &org);
        }
        Ok(Self {
            http: Http::new(insecure_skip_verify, TIMEOUT)?,
            query_url,
            address: vendor::shown(&base),
            authorization,
        })
    }

    async fn flux(&self, query: &str) -> Result<String, QueryError> {
        let body = serde_json::json!({
            "query": query,
            "type": "flux",
            "dialect": {
                "annotations": ["datatype", "group", "default"],
                "delimiter": ",",
                "header": true,
            },
        });
        let mut request = self
            .http
            .client()
            .post(self.query_url.clone())
            .header("Accept", "application/csv")
            .json(&body);
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization.clone());
        }
        match self.http.send(request).await {
            Err(QueryError::Status { status, body }) => {
                Err(rejection(&body).unwrap_or(QueryError::Status { status, body }))
            }
            other => other,
        }
    }
}

/// InfluxDB's JSON error body, `{"code":"invalid","message":"..."}`.
fn rejection(body: &str) -> Option<QueryError> {
    let error: serde_json::Value = serde_json::from_str(body).ok()?;
    Some(QueryError::Rejected {
        error_type: error.get("code")?.as_str()?.to_string(),
        error: error.get("message")?.as_str()?.to_string(),
    })
}

/// Splits one CSV line, honouring double quotes (Flux quotes values with commas in them).
fn fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                if let Some(f) = fields.last_mut() {
                    f.push('"');
                }
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields
}

/// The value of a Flux answer: `_value` of the first record, as Flagger takes it. No record
/// or an empty `_value` is [`QueryError::NoValues`] (Flagger returns 0 for no record); an
/// error table is [`QueryError::Rejected`].
pub fn parse_csv(body: &str) -> Result<f64, QueryError> {
    let mut datatypes: Vec<String> = Vec::new();
    let mut header: Option<Vec<String>> = None;
    for line in body.lines().map(|l| l.trim_end_matches('\r')) {
        if line.is_empty() {
            header = None;
            datatypes.clear();
            continue;
        }
        if let Some(annotation) = line.strip_prefix("#datatype,") {
            datatypes = std::iter::once(String::new()).chain(fields(annotation)).collect();
            header = None;
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let row = fields(line);
        let Some(columns) = &header else {
            header = Some(row);
            continue;
        };
        let column = |name: &str| columns.iter().position(|c| c == name);
        if let (Some(error), None) = (column("error"), column("_value")) {
            return Err(QueryError::Rejected {
                error_type: "error".into(),
                error: row.get(error).cloned().unwrap_or_default(),
            });
        }
        let index =
            column("_value").ok_or_else(|| vendor::decode("the table has no `_value` column", body))?;
        let text = row.get(index).map(String::as_str).unwrap_or_default();
        if text.is_empty() {
            return Err(QueryError::NoValues);
        }
        let datatype = datatypes.get(index).map(String::as_str).unwrap_or("double");
        return match datatype {
            "double" | "long" | "unsignedLong" => vendor::value(
                text.parse()
                    .map_err(|_| vendor::decode(format!("`_value` `{text}` is not a number"), body))?,
            ),
            other => Err(vendor::decode(
                format!("`_value` is of type {other}, not a number"),
                body,
            )),
        };
    }
    Err(QueryError::NoValues)
}

#[async_trait]
impl MetricProvider for InfluxDb {
    async fn run_query(&self, query: &str) -> Result<f64, QueryError> {
        parse_csv(&self.flux(query).await?)
    }

    async fn is_online(&self) -> Result<bool, QueryError> {
        match parse_csv(&self.flux(ONLINE_QUERY).await?) {
            Err(e @ QueryError::Rejected { .. }) => Err(e),
            _ => Ok(true),
        }
    }

    fn kind(&self) -> &'static str {
        "influxdb"
    }

    fn address(&self) -> &str {
        &self.address
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::analysis::vendor::fake;

    const ANSWER: &str = "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,double,string\r\n\
#group,false,false,true,true,false,true\r\n\
#default,_result,,,,,\r\n\
,result,table,_start,_stop,_value,_measurement\r\n\
,,0,2024-01-01T00:00:00Z,2024-01-01T00:10:00Z,99.25,\"http, requests\"\r\n\
,,1,2024-01-01T00:00:00Z,2024-01-01T00:10:00Z,1.5,other\r\n\r\n";

    fn creds() -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("token".to_string(), b"tok-secret".to_vec()),
            ("org".to_string(), b"my org".to_vec()),
        ])
    }

    #[test]
    fn the_first_record_is_the_value() {
        assert_eq!(parse_csv(ANSWER), Ok(99.25));
        let long = "#datatype,string,long,long\n#group,false,false,false\n#default,_result,,\n,result,table,_value\n,,0,42\n";
        assert_eq!(parse_csv(long), Ok(42.0));
    }

    #[test]
    fn no_records_or_empty_value_is_no_values() {
        assert_eq!(parse_csv(""), Err(QueryError::NoValues));
        assert_eq!(parse_csv("\r\n"), Err(QueryError::NoValues));
        let empty = "#datatype,string,long,double\n#group,false,false,false\n#default,_result,,\n,result,table,_value\n,,0,\n";
        assert_eq!(parse_csv(empty), Err(QueryError::NoValues));
    }

    #[test]
    fn error_tables_and_odd_tables() {
        let error = "#datatype,string,string\n#group,true,true\n#default,,\n,error,reference\n,\"type error 1:1-1:5: undefined identifier x\",\n";
        assert_eq!(
            parse_csv(error),
            Err(QueryError::Rejected {
                error_type: "error".into(),
                error: "type error 1:1-1:5: undefined identifier x".into()
            })
        );
        let strings = "#datatype,string,long,string\n#group,false,false,false\n#default,_result,,\n,result,table,_value\n,,0,abc\n";
        assert_eq!(parse_csv(strings).unwrap_err().category(), "QueryDecode");
        let no_value = "#datatype,string,long\n#group,false,false\n#default,_result,\n,result,table\n,,0\n";
        assert_eq!(parse_csv(no_value).unwrap_err().category(), "QueryDecode");
    }

    #[test]
    fn secret_needs_token_and_org() {
        let creds = BTreeMap::from([("token".to_string(), b"t".to_vec())]);
        let err = InfluxDb::new(Some("http://i:8086"), Some(&creds), false)
            .err()
            .unwrap();
        assert!(err.contains("`org`"), "{err}");
        assert!(InfluxDb::new(None, None, false).is_err());
    }

    #[tokio::test]
    async fn queries_post_flux_with_token_and_org() {
        let vendor = fake::serve(&[(200, ANSWER)]).await;
        let flux = "from(bucket: \"b\") |> range(start: -5m) |> mean()";
        let influx = InfluxDb::new(Some(&vendor.address), Some(&creds()), false).unwrap();
        assert_eq!(influx.run_query(flux).await, Ok(99.25));
        let request = vendor.request();
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/api/v2/query")
        );
        assert_eq!(request.param("org").unwrap(), "my org");
        assert_eq!(request.header("authorization"), Some("Token tok-secret"));
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"query": flux, "type": "flux", "dialect": {
                "annotations": ["datatype", "group", "default"], "delimiter": ",", "header": true}})
        );
    }

    #[tokio::test]
    async fn refused_queries_quote_influx_and_is_online() {
        let vendor = fake::serve(&[(
            400,
            r#"{"code":"invalid","message":"compilation failed: error at @1:1-1:3"}"#,
        )])
        .await;
        let influx = InfluxDb::new(Some(&vendor.address), None, false).unwrap();
        let err = influx.run_query("x(").await.unwrap_err();
        assert_eq!(err.to_string(), "invalid: compilation failed: error at @1:1-1:3");
        assert!(vendor.request().header("authorization").is_none());
        let vendor = fake::serve(&[(401, "unauthorized access")]).await;
        let influx = InfluxDb::new(Some(&vendor.address), Some(&creds()), false).unwrap();
        assert_eq!(influx.is_online().await.unwrap_err().category(), "QueryStatus");
        let vendor = fake::serve(&[(200, "\r\n")]).await;
        let influx = InfluxDb::new(Some(&vendor.address), Some(&creds()), false).unwrap();
        assert_eq!(influx.is_online().await, Ok(true));
        let body: serde_json::Value = serde_json::from_str(&vendor.request().body).unwrap();
        assert_eq!(body["query"], ONLINE_QUERY);
    }
}
