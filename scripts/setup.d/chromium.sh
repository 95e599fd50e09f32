# Chromium for the browser tests of the web UI (chromedp): Debian's
# chromium package when no browser is found. Sourced by scripts/test;
# exports ERRAND_TEST_CHROMIUM with the browser's path.

errand_chromium_find() {
	local c
	for c in "${ERRAND_TEST_CHROMIUM:-}" chromium chromium-browser google-chrome-stable google-chrome; do
		[ -n "$c" ] || continue
		if command -v "$c" >/dev/null 2>&1; then
			command -v "$c"
			return 0
		fi
	done
	return 1
}

errand_chromium_install() {
	if errand_chromium_find >/dev/null; then
		return 0
	fi
	echo "installing chromium"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q chromium >/dev/null ||
		{ apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
}

if errand_chromium_install && ERRAND_TEST_CHROMIUM=$(errand_chromium_find); then
	export ERRAND_TEST_CHROMIUM
	echo "chromium: $ERRAND_TEST_CHROMIUM"
else
	echo "chromium is not available: the browser tests will fail (apt-get install chromium)" >&2
fi
