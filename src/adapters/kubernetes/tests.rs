//! Unit tests of the Kubernetes backend's pure parts.
