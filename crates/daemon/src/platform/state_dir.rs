//! The daemon's state directory: created if missing, private to the daemon. On Unix its mode is
//! 0700 (the daemon runs as root); on Windows its access list admits SYSTEM and administrators
//! only, is protected from the parent's entries, and is inherited by every file in it.

use anyhow::{Context, Result};
use std::path::Path;

/// Creates `dir` (and parents) and restricts it to the daemon's own user (0700 on Unix;
/// SYSTEM and administrators on Windows).
pub fn prepare(dir: &Path) -> Result<()> {
    #[cfg(windows)]
    if let Some(parent) = dir.parent() {
        // The directory itself is created with its access list (no moment without it).
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        windows::create(dir)
            .with_context(|| format!("cannot create state directory {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create state directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict state directory {}", dir.display()))?;
    }
    #[cfg(windows)]
    windows::restrict(dir)
        .with_context(|| format!("cannot restrict state directory {}", dir.display()))?;
    Ok(())
}

#[cfg(windows)]
pub(crate) mod windows {
    //! The state directory's access list, set with the Windows security API.
    use crate::platform::win_security::SecurityDescriptor;
    #[cfg(test)]
    use std::ffi::c_void;
    use std::os::windows::ffi::OsStrExt;
    use std::path::Path;
    #[cfg(test)]
    use windows_sys::Win32::Foundation::LocalFree;
    use windows_sys::Win32::Foundation::{ERROR_ALREADY_EXISTS, ERROR_SUCCESS};
    #[cfg(test)]
    use windows_sys::Win32::Security::Authorization::SDDL_REVISION_1;
    #[cfg(test)]
    use windows_sys::Win32::Security::Authorization::{
        ConvertSecurityDescriptorToStringSecurityDescriptorW, GetNamedSecurityInfoW,
    };
    use windows_sys::Win32::Security::Authorization::{SetNamedSecurityInfoW, SE_FILE_OBJECT};
    use windows_sys::Win32::Security::{
        GetSecurityDescriptorDacl, ACL, DACL_SECURITY_INFORMATION,
        PROTECTED_DACL_SECURITY_INFORMATION, SECURITY_ATTRIBUTES,
    };
    use windows_sys::Win32::Storage::FileSystem::CreateDirectoryW;

    /// Full access for SYSTEM and administrators, inherited by files and folders inside; the
    /// parent's entries (e.g. "Users: read" on ProgramData) are not inherited.
    pub const SDDL: &str = "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)";

    fn wide(path: &Path) -> Vec<u16> {
        path.as_os_str()
            .encode_wide()
            .chain(std::iter::once(0))
            .collect()
    }

    /// Creates `dir` with [`SDDL`] as its access list; an existing directory is left as it is.
    pub fn create(dir: &Path) -> std::io::Result<()> {
        let descriptor = SecurityDescriptor::from_sddl(SDDL)?;
        let attrs = SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: descriptor.as_ptr(),
            bInheritHandle: 0,
        };
        let path = wide(dir);
        // SAFETY: `path` is NUL-terminated; `attrs` and its descriptor live until after the call.
        let ok = unsafe { CreateDirectoryW(path.as_ptr(), &attrs) };
        if ok != 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(ERROR_ALREADY_EXISTS as i32) {
            Ok(())
        } else {
            Err(e)
        }
    }

    /// Replaces `dir`'s access list with [`SDDL`] (and its files' inherited entries with it).
    pub fn restrict(dir: &Path) -> std::io::Result<()> {
        let descriptor = SecurityDescriptor::from_sddl(SDDL)?;
        let mut present = 0;
        let mut defaulted = 0;
        let mut dacl: *mut ACL = std::ptr::null_mut();
        // SAFETY: `descriptor` is a valid descriptor; the out-pointers are valid locals.
        let ok = unsafe {
            GetSecurityDescriptorDacl(descriptor.as_ptr(), &mut present, &mut dacl, &mut defaulted)
        };
        if ok == 0 || present == 0 {
            Err(std::io::Error::last_os_error())
        } else {
            let path = wide(dir);
            // SAFETY: `path` is NUL-terminated; `dacl` lives inside `descriptor` until freed.
            let rc = unsafe {
                SetNamedSecurityInfoW(
                    path.as_ptr(),
                    SE_FILE_OBJECT,
                    DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    dacl,
                    std::ptr::null(),
                )
            };
            if rc == ERROR_SUCCESS {
                Ok(())
            } else {
                Err(std::io::Error::from_raw_os_error(rc as i32))
            }
        }
    }

    /// [`SDDL`] as the security API reads it back from the descriptor this module applies.
    #[cfg(test)]
    pub fn descriptor_sddl() -> std::io::Result<String> {
        to_sddl(SecurityDescriptor::from_sddl(SDDL)?.as_ptr())
    }

    /// True when running under Wine (its ntdll exports `wine_get_version`).
    #[cfg(test)]
    pub fn under_wine() -> bool {
        use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
        // SAFETY: both names are NUL-terminated; ntdll is always loaded.
        unsafe {
            let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
            !ntdll.is_null() && GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()).is_some()
        }
    }

    /// A descriptor's access list as SDDL.
    #[cfg(test)]
    fn to_sddl(descriptor: *mut c_void) -> std::io::Result<String> {
        let mut text: *mut u16 = std::ptr::null_mut();
        let mut len = 0u32;
        // SAFETY: `descriptor` is a valid descriptor; `text` is freed with LocalFree.
        let ok = unsafe {
            ConvertSecurityDescriptorToStringSecurityDescriptorW(
                descriptor,
                SDDL_REVISION_1,
                DACL_SECURITY_INFORMATION,
                &mut text,
                &mut len,
            )
        };
        if ok == 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the call wrote `len` UTF-16 units (with the NUL) at `text`.
        let units = unsafe { std::slice::from_raw_parts(text, len as usize) };
        let s = String::from_utf16_lossy(units)
            .trim_end_matches('\0')
            .to_string();
        // SAFETY: allocated by the conversion above.
        unsafe { LocalFree(text.cast()) };
        Ok(s)
    }

    /// The access list of `path` as SDDL (what the file system reports back).
    #[cfg(test)]
    pub fn dacl_sddl(path: &Path) -> std::io::Result<String> {
        let path = wide(path);
        let mut descriptor: *mut c_void = std::ptr::null_mut();
        // SAFETY: `path` is NUL-terminated; the descriptor is freed below with LocalFree.
        let rc = unsafe {
            GetNamedSecurityInfoW(
                path.as_ptr(),
                SE_FILE_OBJECT,
                DACL_SECURITY_INFORMATION,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &mut descriptor,
            )
        };
        if rc != ERROR_SUCCESS {
            return Err(std::io::Error::from_raw_os_error(rc as i32));
        }
        let result = to_sddl(descriptor);
        // SAFETY: allocated by GetNamedSecurityInfoW.
        unsafe { LocalFree(descriptor) };
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("pinhole-state-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[cfg(unix)]
    #[test]
    fn the_state_directory_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp("unix");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&dir.join("state")).unwrap();
        prepare(&dir).unwrap();
        for d in [dir.join("state"), dir.clone()] {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The descriptor the directory gets: protected, SYSTEM and administrators only, inherited.
    #[cfg(windows)]
    #[test]
    fn the_state_descriptor_admits_only_system_and_administrators() {
        assert_eq!(
            windows::descriptor_sddl().unwrap(),
            "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"
        );
    }

    /// Read back from the file system: only SYSTEM and administrators, protected from the
    /// parent, inherited by the files in it. Wine keeps no access lists for files (it makes
    /// one up from the Unix mode bits), so there only the creation itself is checked; the
    /// read-back runs on Windows (hosted CI).
    #[cfg(windows)]
    #[test]
    fn the_state_directory_admits_only_system_and_administrators() {
        let dir = temp("windows").join("state");
        prepare(&dir).unwrap();
        std::fs::write(dir.join("node.key"), b"secret").unwrap();
        std::fs::write(dir.join("control.json"), b"{}").unwrap();
        let sddl = windows::dacl_sddl(&dir).unwrap();
        if windows::under_wine() {
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("under Wine, which keeps no file access lists; it reports {sddl}\n")
                    .as_bytes(),
            );
            assert!(dir.join("node.key").exists());
            return;
        }
        assert!(
            sddl.starts_with("D:P"),
            "not protected from the parent: {sddl}"
        );
        let aces: Vec<&str> = sddl.split('(').skip(1).collect();
        assert_eq!(aces.len(), 2, "{sddl}");
        for who in [";;;SY)", ";;;BA)"] {
            assert!(
                aces.iter().any(|a| a.ends_with(who) && a.contains("CI")),
                "{sddl}"
            );
        }
        for file in ["node.key", "control.json"] {
            let f = windows::dacl_sddl(&dir.join(file)).unwrap();
            for bad in ["WD)", "BU)", "AU)", "IU)"] {
                assert!(!f.contains(bad), "{file}: {f}");
            }
            assert!(f.contains(";;;SY)") && f.contains(";;;BA)"), "{file}: {f}");
        }
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }
}
