#!/bin/sh
# eci-js.sh installs Alibaba Cloud's official JavaScript ECI SDK, a second
# official client for the ECI front's tests (internal/server
# TestECIJavaScriptSDK), into a cache directory and prints its node_modules
# path. Without node/npm, or when npm cannot reach its registry, it prints
# nothing and the test skips.
set -eu
dir=${SKIFF_ECI_JS_CACHE:-/var/cache/skiff-eci-js}
sdk="@alicloud/eci20180808@2.0.3"
client="@alicloud/openapi-client@0.4.15"
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || exit 0
if [ ! -d "$dir/node_modules/@alicloud/eci20180808" ]; then
	mkdir -p "$dir"
	[ -f "$dir/package.json" ] || echo '{"name":"skiff-eci-js","private":true}' >"$dir/package.json"
	if ! npm install --prefix "$dir" --no-audit --no-fund --silent "$sdk" "$client" >&2; then
		echo "eci-js: npm install of $sdk failed; the JavaScript SDK test will skip" >&2
		exit 0
	fi
fi
echo "$dir/node_modules"
