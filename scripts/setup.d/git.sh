# Git and Git LFS for the Git source tests (a git daemon and git
# http-backend on loopback, LFS objects over a file URL): Debian's git
# and git-lfs when missing. Sourced by scripts/test.

if ! command -v git >/dev/null 2>&1 || ! git lfs version >/dev/null 2>&1; then
	echo "installing git and git-lfs"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q git git-lfs >/dev/null ||
		{ apt-get update -q >/dev/null && apt-get install -y -q git git-lfs >/dev/null; } ||
		echo "git or git-lfs is not available: the Git source tests will fail (apt-get install git git-lfs)" >&2
fi
