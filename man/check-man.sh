#!/bin/bash
# check-man.sh PAGE...: formats each man page as man(1) would and fails on any warning of
# groff (man --warnings prints them on stderr and still exits 0) or a page that does not render.
set -euo pipefail
command -v man >/dev/null || {
    echo "check-man: man is missing (tools/install-deps.sh installs man-db)" >&2
    exit 1
}
failures=0
for page in "$@"; do
    rendered=$(mktemp)
    warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$page" 2>&1 >"$rendered") || {
        warnings="man failed on it. $warnings"
    }
    if [[ -n $warnings ]]; then
        echo "check-man: FAIL $page:"
        printf '%s\n' "$warnings" | sed 's/^/  /'
        failures=$((failures + 1))
    elif ! grep -q '^NAME' "$rendered"; then
        echo "check-man: FAIL $page: no NAME section in what it renders"
        failures=$((failures + 1))
    else
        echo "check-man: ok   $page ($(wc -l <"$rendered") lines)"
    fi
    rm -f "$rendered"
done
((failures == 0))
