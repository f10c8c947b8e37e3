//! pinholed as a Windows service. The service control manager (SCM) starts `pinholed service
//! run`; this module answers its controls (stop and shutdown end the daemon the way Ctrl-C does,
//! so the port mapping is deleted and the state is kept), tells it the states the daemon goes
//! through, and logs to `pinholed.log` in the state directory (a service has no console). The
//! installer registers and removes the service with `pinholed service install|uninstall`:
//! LocalSystem, automatic start, restarted on failure.

use crate::args::ServiceCommand;
use anyhow::{Context, Result};
use std::ffi::{OsStr, OsString};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept,
    ServiceErrorControl, ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{
    self, ServiceControlHandlerResult, ServiceStatusHandle,
};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

/// The service's name (`sc query pinholed`).
pub const NAME: &str = "pinholed";
const DISPLAY_NAME: &str = "Pinhole helper (pinholed)";
const DESCRIPTION: &str =
    "Pinhole mesh VPN: owns the Pinhole network adapter and the tunnel; the app and the pinhole \
     command talk to it.";

/// Set by a stop or shutdown control; the daemon's loop waits on it like on Ctrl-C.
static STOP: Notify = Notify::const_new();
/// The SCM's handle for this service, once registered (only under the SCM).
static STATUS: OnceLock<ServiceStatusHandle> = OnceLock::new();

/// Runs `command`.
pub fn command(command: ServiceCommand) -> Result<()> {
    match command {
        ServiceCommand::Install => install(),
        ServiceCommand::Uninstall => uninstall(),
        ServiceCommand::Start => start(),
        ServiceCommand::Stop => stop(),
        ServiceCommand::Run => {
            // The dispatcher calls service_main on a thread of its own, which reads the
            // process's options (the state directory and socket) itself.
            service_dispatcher::start(NAME, ffi_service_main).context(
                "cannot connect to the service control manager (`pinholed service run` is what \
                 the service runs; start pinholed from a terminal without it)",
            )
        }
    }
}

/// Resolves when the SCM asks the service to stop (never outside the SCM).
pub async fn stop_requested() {
    STOP.notified().await
}

/// What the daemon's readiness notes (`READY=1`, `STOPPING=1`) mean to the SCM.
pub fn notify(state: &str) {
    let state = match state {
        "READY=1" => ServiceState::Running,
        "STOPPING=1" => ServiceState::StopPending,
        _ => return,
    };
    report(status(state, ServiceExitCode::Win32(0)));
}

define_windows_service!(ffi_service_main, service_main);

fn service_main(_scm_arguments: Vec<OsString>) {
    let handle = match service_control_handler::register(NAME, on_control) {
        Ok(h) => h,
        Err(_) => return,
    };
    let _ = STATUS.set(handle);
    report(status(
        ServiceState::StartPending,
        ServiceExitCode::Win32(0),
    ));
    let result = run();
    if let Err(e) = &result {
        tracing::error!("{e:#}");
    }
    report(status(ServiceState::Stopped, exit_code(&result)));
}

/// The daemon with the service's command line and a log file in the state directory.
fn run() -> Result<()> {
    use clap::Parser;
    let args = crate::args::Args::try_parse()?;
    crate::platform::state_dir::prepare(&args.state_dir)?;
    let log = std::fs::File::create(args.state_dir.join("pinholed.log"))
        .context("cannot create pinholed.log in the state directory")?;
    crate::init_logging(&args.log, Some(log));
    crate::serve(args)
}

/// The SCM's controls: stop and shutdown end the daemon; the rest are not taken.
fn on_control(control: ServiceControl) -> ServiceControlHandlerResult {
    match control {
        ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
            report(status(ServiceState::StopPending, ServiceExitCode::Win32(0)));
            STOP.notify_one();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    }
}

/// The status the SCM is told in `state`: controls are taken only while running, and a
/// pending state promises news within the wait hint.
fn status(state: ServiceState, exit_code: ServiceExitCode) -> ServiceStatus {
    let pending = matches!(
        state,
        ServiceState::StartPending | ServiceState::StopPending
    );
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted: if state == ServiceState::Running {
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
        } else {
            ServiceControlAccept::empty()
        },
        exit_code,
        checkpoint: 0,
        wait_hint: if pending {
            Duration::from_secs(10)
        } else {
            Duration::ZERO
        },
        process_id: None,
    }
}

/// A daemon that failed exits with a service-specific code, which the SCM counts as a failure
/// (the recovery actions restart it).
fn exit_code(result: &Result<()>) -> ServiceExitCode {
    match result {
        Ok(()) => ServiceExitCode::Win32(0),
        Err(_) => ServiceExitCode::ServiceSpecific(1),
    }
}

fn report(status: ServiceStatus) {
    if let Some(handle) = STATUS.get() {
        if let Err(e) = handle.set_service_status(status) {
            tracing::warn!("cannot tell the service control manager our state: {e}");
        }
    }
}

/// The registration: this executable with `service run`, as LocalSystem, started at boot.
fn service_info(name: &str, executable: std::path::PathBuf) -> ServiceInfo {
    ServiceInfo {
        name: name.into(),
        display_name: DISPLAY_NAME.into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: executable,
        launch_arguments: vec!["service".into(), "run".into()],
        dependencies: vec![],
        account_name: None,
        account_password: None,
    }
}

/// Restart after 2 s, then 5 s, then 30 s; the count resets after a day without failures.
fn failure_actions() -> ServiceFailureActions {
    let restart = |secs| ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(secs),
    };
    ServiceFailureActions {
        reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 3600)),
        reboot_msg: None,
        command: None,
        actions: Some(vec![restart(2), restart(5), restart(30)]),
    }
}

fn manager(access: ServiceManagerAccess) -> Result<ServiceManager> {
    ServiceManager::local_computer(None::<&OsStr>, access)
        .context("cannot open the service control manager (run as Administrator)")
}

fn install() -> Result<()> {
    let exe = std::env::current_exe().context("cannot find pinholed's own path")?;
    register(&service_info(NAME, exe))?;
    println!("registered the service {NAME} (automatic start, LocalSystem)");
    Ok(())
}

/// Creates the service `info` describes, or updates it when it exists.
fn register(info: &ServiceInfo) -> Result<()> {
    let scm = manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?;
    let access = ServiceAccess::CHANGE_CONFIG | ServiceAccess::QUERY_CONFIG;
    let service = match scm.open_service(&info.name, access) {
        Ok(existing) => {
            existing
                .change_config(info)
                .context("cannot update the service's registration")?;
            existing
        }
        Err(_) => scm
            .create_service(info, access)
            .context("cannot register the service")?,
    };
    service
        .set_description(DESCRIPTION)
        .context("cannot set the service's description")?;
    service
        .update_failure_actions(failure_actions())
        .context("cannot set the service's recovery actions")?;
    // Windows takes this since Vista; an SCM without it (Wine's) restarts on crashes only.
    const ERROR_INVALID_LEVEL: i32 = 124;
    match service.set_failure_actions_on_non_crash_failures(true) {
        Err(windows_service::Error::Winapi(e)) if e.raw_os_error() == Some(ERROR_INVALID_LEVEL) => {
            eprintln!(
                "note: this service control manager cannot restart the service after a failed \
                 exit, only after a crash"
            );
        }
        other => other.context("cannot make the recovery actions apply to a failed exit")?,
    }
    Ok(())
}

fn uninstall() -> Result<()> {
    if unregister(NAME)? {
        println!("removed the service {NAME}");
    } else {
        println!("the service {NAME} is not registered");
    }
    Ok(())
}

/// Stops (waiting for it) and removes the service `name`; false if it was not registered.
fn unregister(name: &str) -> Result<bool> {
    let scm = manager(ServiceManagerAccess::CONNECT)?;
    let access = ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE;
    let Ok(service) = scm.open_service(name, access) else {
        return Ok(false);
    };
    stop_and_wait(&service)?;
    service
        .delete()
        .context("cannot remove the service's registration")?;
    Ok(true)
}

fn start() -> Result<()> {
    let scm = manager(ServiceManagerAccess::CONNECT)?;
    let service = scm
        .open_service(NAME, ServiceAccess::QUERY_STATUS | ServiceAccess::START)
        .context("the service is not registered (pinholed service install)")?;
    if service.query_status()?.current_state != ServiceState::Running {
        service
            .start::<&OsStr>(&[])
            .context("the service did not start")?;
        wait_for(&service, ServiceState::Running)?;
    }
    println!("the service {NAME} is running");
    Ok(())
}

fn stop() -> Result<()> {
    let scm = manager(ServiceManagerAccess::CONNECT)?;
    let service = scm
        .open_service(NAME, ServiceAccess::QUERY_STATUS | ServiceAccess::STOP)
        .context("the service is not registered")?;
    stop_and_wait(&service)?;
    println!("the service {NAME} is stopped");
    Ok(())
}

/// Asks a running `service` to stop and waits until it has. A refused stop (one already
/// stopping refuses another) is an error only if the service does not stop all the same.
fn stop_and_wait(service: &windows_service::service::Service) -> Result<()> {
    if service.query_status()?.current_state == ServiceState::Stopped {
        return Ok(());
    }
    let refused = service.stop().err();
    wait_for(service, ServiceState::Stopped).map_err(|waited| match refused {
        Some(e) => anyhow::Error::new(e).context("the service did not take the stop"),
        None => waited,
    })
}

/// Polls until the service is in `state` (30 s at most: a pinholed deleting a port mapping
/// takes up to 3 s).
fn wait_for(service: &windows_service::service::Service, state: ServiceState) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = service.query_status()?.current_state;
        if now == state {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("the service is {now:?} after 30 s, not {state:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_and_shutdown_end_the_daemon_and_other_controls_are_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let ended = |rt: &tokio::runtime::Runtime| {
            rt.block_on(async {
                tokio::time::timeout(Duration::from_millis(50), stop_requested())
                    .await
                    .is_ok()
            })
        };
        assert!(!ended(&rt), "nothing asked for a stop yet");
        let answer = |c| on_control(c).to_raw();
        let no_error = ServiceControlHandlerResult::NoError.to_raw();
        let refused = ServiceControlHandlerResult::NotImplemented.to_raw();
        assert_eq!(answer(ServiceControl::Interrogate), no_error);
        assert_eq!(answer(ServiceControl::Pause), refused);
        assert!(!ended(&rt), "interrogate and pause do not stop it");
        for control in [ServiceControl::Stop, ServiceControl::Shutdown] {
            assert_eq!(answer(control), no_error);
            assert!(ended(&rt), "{control:?} ends the daemon");
        }
    }

    #[test]
    fn controls_are_taken_only_while_running_and_a_failure_is_a_failure() {
        let running = status(ServiceState::Running, ServiceExitCode::Win32(0));
        assert!(running
            .controls_accepted
            .contains(ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN));
        let starting = status(ServiceState::StartPending, ServiceExitCode::Win32(0));
        assert!(starting.controls_accepted.is_empty());
        assert!(starting.wait_hint >= Duration::from_secs(1));
        assert_eq!(exit_code(&Ok(())), ServiceExitCode::Win32(0));
        assert_eq!(
            exit_code(&Err(anyhow::anyhow!("no TUN"))),
            ServiceExitCode::ServiceSpecific(1)
        );
    }

    #[test]
    fn the_registration_is_an_automatic_localsystem_service_restarted_on_failure() {
        let exe = std::path::PathBuf::from(r"C:\Program Files\Pinhole\pinholed.exe");
        let info = service_info(NAME, exe.clone());
        assert_eq!(info.name, OsString::from("pinholed"));
        assert_eq!(info.start_type, ServiceStartType::AutoStart);
        assert_eq!(info.account_name, None, "None is LocalSystem");
        assert_eq!(info.executable_path, exe);
        assert_eq!(
            info.launch_arguments,
            vec![OsString::from("service"), "run".into()]
        );
        let actions = failure_actions().actions.unwrap();
        assert_eq!(actions.len(), 3);
        assert!(actions
            .iter()
            .all(|a| a.action_type == ServiceActionType::Restart));
    }

    /// Against the machine's service control manager (Wine's in `cargo xtask test`, the
    /// runner's in hosted CI), under a name of the test's own.
    #[test]
    fn a_registration_is_made_updated_and_removed() {
        let name = format!("pinholed-test-{}", std::process::id());
        let exe = std::env::current_exe().unwrap();
        let info = service_info(&name, exe.clone());
        register(&info).map_err(|e| format!("{e:#}")).unwrap();
        let scm = manager(ServiceManagerAccess::CONNECT).unwrap();
        let read = |scm: &ServiceManager| {
            let service = scm
                .open_service(&name, ServiceAccess::QUERY_CONFIG)
                .unwrap();
            let config = service.query_config().unwrap();
            // Wine's SCM keeps recovery actions but cannot read them back.
            let actions = (!under_wine()).then(|| service.get_failure_actions().unwrap());
            (config, actions)
        };
        let (config, actions) = read(&scm);
        assert_eq!(config.start_type, ServiceStartType::AutoStart);
        let path = config.executable_path.to_string_lossy().into_owned();
        assert!(path.contains("service run"), "{path}");
        if let Some(actions) = actions {
            assert_eq!(actions.actions.map(|a| a.len()), Some(3));
        }
        // Registering again (an upgrade) updates the path instead of failing.
        let mut moved = info.clone();
        moved.executable_path = exe.with_file_name("moved-pinholed.exe");
        register(&moved).unwrap();
        let (config, _) = read(&scm);
        assert!(config
            .executable_path
            .to_string_lossy()
            .contains("moved-pinholed.exe"));
        assert!(unregister(&name).unwrap());
        assert!(!unregister(&name).unwrap(), "gone: nothing to remove");
    }

    /// Whether this is Wine (its ntdll exports `wine_get_version`).
    fn under_wine() -> bool {
        use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
        // SAFETY: both names are NUL-terminated; ntdll is loaded in every process.
        unsafe {
            let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
            !ntdll.is_null() && GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()).is_some()
        }
    }
}
