#!/bin/sh
# One manual page from a program's --help and --version (cmake/RdvDeb.cmake):
#   manpage.sh HELP2MAN PROGRAM DESCRIPTION INCLUDE OUT.8.gz
set -eu
"$1" -N -s 8 -n "$3" -i "$4" --no-discard-stderr "$2" >"$5.tmp"
gzip -9n <"$5.tmp" >"$5"
rm -f "$5.tmp"
