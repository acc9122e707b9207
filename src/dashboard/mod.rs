//! The delivery dashboard: every rollout the viewer may see, served by the controller binary.
