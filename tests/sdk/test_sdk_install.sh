#!/usr/bin/env bash
# test_sdk_install.sh - the SDK as a user gets it: `cmake --install` into a fresh prefix, then
#   - the installed headers compile on their own (C11, -Wall -Wextra -Werror -pedantic);
#   - the shared library exports the public flowd_* functions and nothing else;
#   - every SDK example builds with its own Makefile and pkg-config against that prefix only,
#     and the binaries run (--help).
set -euo pipefail
: "${FLOWD_BUILD:?}" "${FLOWD_SRC:?}"
DIR=$(mktemp -d /tmp/flowd-sdk-install.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cmake --install "$FLOWD_BUILD" --prefix "$DIR/prefix" --component sdk >"$DIR/install.log"
for f in include/flowd/flowd.h include/flowd/connector.h include/flowd/error.h \
    include/flowd/version.h lib/pkgconfig/flowd-connector.pc; do
    [ -f "$DIR/prefix/$f" ] || fail "not installed: $f"
done
ls "$DIR"/prefix/lib*/libflowd-connector.so* >/dev/null || fail "shared library not installed"
ls "$DIR"/prefix/lib*/libflowd-connector.a >/dev/null || fail "static library not installed"
export PKG_CONFIG_PATH=$(dirname "$(find "$DIR/prefix" -name flowd-connector.pc)")

printf '#include <flowd/flowd.h>\nint main(void) { return flowd_version() == FLOWD_VERSION ? 0 : 1; }\n' \
    >"$DIR/h.c"
# shellcheck disable=SC2046,SC2086
cc -std=c11 -Wall -Wextra -Werror -pedantic ${SDK_EX_CFLAGS:-} -o "$DIR/h" "$DIR/h.c" \
    $(pkg-config --cflags --libs flowd-connector) ${SDK_EX_LDFLAGS:-} \
    -Wl,-rpath,"$(pkg-config --variable=libdir flowd-connector)" || fail "headers do not compile"
ASAN_OPTIONS=detect_leaks=0 "$DIR/h" || fail "runtime version differs from the header's"

so=$(ls "$DIR"/prefix/lib*/libflowd-connector.so | head -1)
syms=$(nm -D --defined-only "$so" | awk '{print $3}')
others=$(printf '%s\n' "$syms" | grep -v '^flowd_' | grep -v '^_' || true)
[ -z "$others" ] || fail "non-public symbols exported: $others"
case " $(echo $syms) " in *" flowd_conn_run "*) ;; *) fail "flowd_conn_run not exported" ;; esac
case "$syms" in *flowd__*) fail "internal flowd__ symbols exported" ;; esac

for ex in echo rest file-exchange; do
    make -s -C "$FLOWD_SRC/examples/connectors/sdk-$ex" OUT="$DIR" \
        CFLAGS="${SDK_EX_CFLAGS:--O2 -Wall -Wextra -Werror}" LDFLAGS="${SDK_EX_LDFLAGS:-}" ||
        fail "example sdk-$ex does not build against the installed SDK"
    bin="$DIR/sdk-$ex-connector"
    [ -x "$bin" ] || fail "$bin missing"
    ASAN_OPTIONS=detect_leaks=0 "$bin" --help >/dev/null 2>&1 || [ "$ex" = file-exchange ] ||
        fail "$bin --help failed"
    libs=$(ldd "$bin") # not piped into grep -q: SIGPIPE + pipefail would fail at random
    case "$libs" in *"$DIR/prefix"*) ;; *) fail "$bin is not linked to the installed SDK" ;; esac
done
echo "sdk install: OK"
