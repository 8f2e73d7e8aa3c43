# Shared helpers of the scripts in this folder (sourced, not run).

# apt_install PACKAGE WHY MISSING: installs PACKAGE from Debian if we may
# (root with apt-get), else says MISSING is missing and exits.
apt_install() {
    local pkg=$1 why=$2 missing=$3
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing $pkg ($why)" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg") >/dev/null
    else
        echo "$missing is missing ($why): apt-get install $pkg" >&2
        exit 1
    fi
}

# need_apt COMMAND PACKAGE WHY: installs PACKAGE when COMMAND is missing.
need_apt() {
    command -v "$1" >/dev/null 2>&1 || apt_install "$2" "$3" "$1"
}

# need_pkg PACKAGE WHY: installs the Debian PACKAGE unless it is installed.
need_pkg() {
    dpkg -s "$1" >/dev/null 2>&1 || apt_install "$1" "$2" "$1"
}
