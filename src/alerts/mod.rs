//! Alert providers (Slack, Microsoft Teams, Discord, Rocket.Chat, Google Chat): the messages a rollout sends to people.
