/* ProcessPrng for Wine 8, which lacks it: Rust's Windows std asks bcryptprimitives.dll for random
   bytes. Built with MinGW by `cargo xtask test` to run the Windows unit tests under Wine. */
#include <windows.h>
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, n)) return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
