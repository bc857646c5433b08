# Installs cargo-fuzz (for scripts/fuzz.sh) once, cached outside the repository by version.
# Sourced by scripts/test.sh; idempotent.
OZ_CARGO_FUZZ_VERSION=0.13.1
OZ_CARGO_FUZZ="${OZ_TEST_CACHE:-/var/cache/oz-agent-worker-test}/cargo-fuzz-$OZ_CARGO_FUZZ_VERSION/bin"
if [ ! -x "$OZ_CARGO_FUZZ/cargo-fuzz" ]; then
  cargo install --locked cargo-fuzz --version "$OZ_CARGO_FUZZ_VERSION" --root "$(dirname "$OZ_CARGO_FUZZ")"
fi
export OZ_CARGO_FUZZ
