//! Unit tests for the control-plane adapter.
