//! Creates the TUN device with the node's overlay addresses.

use anyhow::{Context, Result};
use ipnet::IpNet;
use tun_rs::{AsyncDevice, DeviceBuilder};

/// WireGuard's usual MTU: 1500 minus the IPv6 + UDP + WireGuard overhead.
pub const DEFAULT_MTU: u16 = 1420;

/// Creates and brings up the TUN device `name` with `addresses`.
pub fn create(name: &str, addresses: &[IpNet], mtu: u16) -> Result<AsyncDevice> {
    let mut builder = DeviceBuilder::new().mtu(mtu);
    // On macOS "utun" means "the next free utunN", which the OS picks when no name is given.
    let os_picks_name = name.is_empty() || (cfg!(target_os = "macos") && name == "utun");
    if !os_picks_name {
        builder = builder.name(name);
    }
    let mut v4 = addresses.iter().filter_map(|a| match a {
        IpNet::V4(n) => Some(*n),
        IpNet::V6(_) => None,
    });
    let first_v4 = v4.next();
    let rest_v4: Vec<_> = v4.collect();
    if let Some(n) = first_v4 {
        builder = builder.ipv4(n.addr(), n.prefix_len(), None);
    }
    let v6: Vec<_> = addresses
        .iter()
        .filter_map(|a| match a {
            IpNet::V6(n) => Some((n.addr(), n.prefix_len())),
            IpNet::V4(_) => None,
        })
        .collect();
    if !v6.is_empty() {
        builder = builder.ipv6_tuple(&v6);
    }
    #[cfg(target_os = "linux")]
    {
        // The default queue of 500 drops bursts that the tunnel can carry.
        builder = builder.tx_queue_len(2000);
        // TSO/GSO super-packets in, GRO-coalesced packets out (see tun_io).
        builder = builder.offload(true);
    }
    #[cfg(windows)]
    {
        // wintun.dll from pinholed's own folder, never from the DLL search path.
        if let Some(dll) = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join("wintun.dll")))
        {
            builder = builder.wintun_file(dll.to_string_lossy().into_owned());
        }
    }
    let device = builder.build_async().with_context(|| {
        if cfg!(windows) {
            format!(
                "cannot create the adapter {name:?} (is pinholed running as an administrator or \
                 the service, with wintun.dll beside it?)"
            )
        } else {
            format!("cannot create TUN device {name:?} (is pinholed running as root?)")
        }
    })?;
    for n in rest_v4 {
        device
            .add_address_v4(n.addr(), n.prefix_len())
            .with_context(|| format!("cannot add address {n} to the TUN device"))?;
    }
    Ok(device)
}

#[cfg(all(test, windows))]
mod tests {
    use super::*;

    /// A real wintun adapter: needs an administrator and the signed wintun.dll beside the test
    /// executable, so it runs in the hosted CI's Windows job (`-- --ignored wintun`), not
    /// under Wine.
    #[test]
    #[ignore = "needs Administrator and wintun.dll (the hosted CI's Windows job runs it)"]
    fn a_wintun_adapter_comes_up_with_its_addresses() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let addresses: Vec<IpNet> = vec![
                "198.18.7.1/24".parse().unwrap(),
                "fd7a:115c:a1e0::7/128".parse().unwrap(),
            ];
            let device = create("PinholeTest", &addresses, DEFAULT_MTU).unwrap();
            assert_eq!(device.name().unwrap(), "PinholeTest");
            let have = device.addresses().unwrap();
            assert!(have.contains(&"198.18.7.1".parse().unwrap()), "{have:?}");
        });
    }
}
