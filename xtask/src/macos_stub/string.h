/* Stand-in for the C library's string.h (only the macOS check uses it; see TargetConditionals.h). */
#include <stddef.h>
void *memcpy(void *, const void *, size_t);
void *memmove(void *, const void *, size_t);
void *memset(void *, int, size_t);
int memcmp(const void *, const void *, size_t);
