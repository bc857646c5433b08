//! Unit tests of the Direct backend pieces.
