// reqctx's version: the one place it is written (CMake reads it from here).
//
// reqctx follows semantic versioning with 0.x rules: within one 0.MINOR
// series (0.MINOR.PATCH) the public API pinned by tests/api_signature_test.cc,
// tests/interceptors_api_signature_test.cc and tests/async_api_signature_test.cc
// does not change, and the shared libraries keep their ABI (SONAME
// libreqctx_*.so.0.MINOR). A new MINOR may change it; CHANGELOG.md says how.
//
// Thread-safety / Lifetime: compile-time constants only.
#ifndef REQCTX_CONTEXT_VERSION_H_
#define REQCTX_CONTEXT_VERSION_H_

#define REQCTX_VERSION_MAJOR 0
#define REQCTX_VERSION_MINOR 1
#define REQCTX_VERSION_PATCH 0
#define REQCTX_VERSION_STRING "0.1.0"

#endif  // REQCTX_CONTEXT_VERSION_H_
