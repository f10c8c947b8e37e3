/* Stand-in for the C library's assert.h (only the macOS check uses it; see TargetConditionals.h). */
#define static_assert _Static_assert
#define assert(x) ((void)0)
