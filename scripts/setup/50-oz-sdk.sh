# Run API tests: the official Python SDK (`oz-agent-sdk`, from PyPI) drives the local control
# plane. Creates a venv under target/test-tools/sdk-venv and pip-installs the SDK into it
# (installing Debian's python3-venv first if the venv module is missing), then exports
# OZ_TEST_PYTHON for tests/scenarios/sdk.rs. Sourced by scripts/test.sh (bash, set -euo
# pipefail); idempotent, and instant once the venv has exactly OZ_SDK_VERSION installed (any
# other version, or none, is replaced).
OZ_SDK_VERSION="${OZ_SDK_VERSION:-0.15.0}"
oz_sdk_venv="$PWD/target/test-tools/sdk-venv"
# The installed version, or empty. No pipe: the command substitution reads all of the output.
oz_sdk_installed="$("$oz_sdk_venv/bin/python" -c \
  'import oz_agent_sdk; print(oz_agent_sdk.__version__)' 2>/dev/null || true)"
if [ "$oz_sdk_installed" != "$OZ_SDK_VERSION" ]; then
  echo "oz-agent-sdk: want $OZ_SDK_VERSION, have ${oz_sdk_installed:-none}: (re)installing"
  command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3; }
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq python3-venv
  fi
  rm -rf "$oz_sdk_venv"
  mkdir -p "$(dirname "$oz_sdk_venv")"
  python3 -m venv "$oz_sdk_venv"
  "$oz_sdk_venv/bin/pip" install -q --disable-pip-version-check "oz-agent-sdk==$OZ_SDK_VERSION"
  oz_sdk_installed="$("$oz_sdk_venv/bin/python" -c \
    'import oz_agent_sdk; print(oz_agent_sdk.__version__)')"
  if [ "$oz_sdk_installed" != "$OZ_SDK_VERSION" ]; then
    echo "oz-agent-sdk: installed $oz_sdk_installed, not $OZ_SDK_VERSION" >&2
    return 1
  fi
fi
export OZ_TEST_PYTHON="$oz_sdk_venv/bin/python"
echo "oz-agent-sdk $oz_sdk_installed"
unset oz_sdk_installed
