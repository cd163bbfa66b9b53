# Sourced by the release builds (build-static.sh, bench.sh): when the debug build (make test,
# make demo) has already compiled RocksDB's C++, link that archive instead of compiling it a
# second time for the release profile. That compile is most of a cold release build (about 15
# minutes on 2 cores); the archive is the same RocksDB, built with optimizations (dependencies
# are optimized in dev builds too, see Cargo.toml) and position-independent code, as the static
# binary needs. librocksdb-sys then still generates its bindings and links it statically.
# Set DELTAFED_ROCKSDB_REBUILD=1 to compile RocksDB for the release build anyway.
if [ -z "${DELTAFED_ROCKSDB_REBUILD:-}" ] && [ -z "${ROCKSDB_LIB_DIR:-}" ]; then
  for lib in "$CARGO_TARGET_DIR"/debug/build/librocksdb-sys-*/out/librocksdb.a; do
    if [ -f "$lib" ]; then
      export ROCKSDB_LIB_DIR
      ROCKSDB_LIB_DIR=$(dirname "$lib")
      export ROCKSDB_STATIC=1
      echo "release build: linking RocksDB from the debug build's $lib" >&2
      break
    fi
  done
fi
