/* Stand-in for the Apple SDK header of the same name, for `cargo xtask test`'s macOS check
 * only: ring's C includes it. The objects built with it are never linked. */
#define TARGET_OS_MAC 1
#define TARGET_OS_OSX 1
#define TARGET_OS_IPHONE 0
#define TARGET_OS_IOS 0
#define TARGET_OS_SIMULATOR 0
