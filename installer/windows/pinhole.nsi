; Pinhole for Windows: the app, the pinhole command, pinholed as a service, and wintun.dll (the
; signed TUN driver) beside pinholed. Built by `cargo xtask package`:
;   makensis -DVERSION=X.Y.Z -DSTAGE=<dir with the files> -DOUTFILE=<setup.exe> [-DWINTUN] pinhole.nsi
; Silent: setup.exe /S [/D=C:\path]; uninstall.exe /S removes everything, the state too.

Unicode true
Target amd64-unicode
SetCompressor /SOLID lzma

!include "MUI2.nsh"
!include "LogicLib.nsh"
!include "x64.nsh"

!ifndef VERSION | STAGE | OUTFILE
  !error "pass -DVERSION=, -DSTAGE= and -DOUTFILE="
!endif

!define UNINSTALL_KEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\Pinhole"

Name "Pinhole"
OutFile "${OUTFILE}"
InstallDir "$PROGRAMFILES64\Pinhole"
InstallDirRegKey HKLM "${UNINSTALL_KEY}" "InstallLocation"
RequestExecutionLevel admin
ShowInstDetails show
ShowUninstDetails show

!define MUI_ICON "${STAGE}\pinhole.ico"
!define MUI_UNICON "${STAGE}\pinhole.ico"
!define MUI_FINISHPAGE_RUN "$INSTDIR\pinhole-app.exe"
!define MUI_FINISHPAGE_RUN_TEXT "Open Pinhole"
!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_PAGE_FINISH
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"

Function .onInit
  ${IfNot} ${RunningX64}
    MessageBox MB_ICONSTOP "Pinhole needs 64-bit Windows." /SD IDOK
    Abort
  ${EndIf}
  SetRegView 64
FunctionEnd

Function un.onInit
  SetRegView 64
FunctionEnd

; Runs a command, logging its output; a failure stops the installation with its exit code.
!macro MustRun COMMAND WHAT
  nsExec::ExecToLog '${COMMAND}'
  Pop $0
  ${If} $0 != 0
    MessageBox MB_ICONSTOP "${WHAT} failed (exit code $0). See the details." /SD IDOK
    SetErrorLevel 2
    Abort
  ${EndIf}
!macroend

Section "Pinhole" Main
  SectionIn RO
  SetOutPath "$INSTDIR"
  ; An upgrade: the running service holds its files.
  ${If} ${FileExists} "$INSTDIR\pinholed.exe"
    nsExec::ExecToLog '"$INSTDIR\pinholed.exe" service stop'
    Pop $0
  ${EndIf}
  File "${STAGE}\pinholed.exe"
  File "${STAGE}\pinhole.exe"
  File "${STAGE}\pinhole-app.exe"
  ; The GNU build loads WebView2 through this DLL; an MSVC build links it in.
!if /FileExists "${STAGE}\WebView2Loader.dll"
  File "${STAGE}\WebView2Loader.dll"
!endif
  File "${STAGE}\pinhole.ico"
!ifdef WINTUN
  File "${STAGE}\wintun.dll"
!endif
  WriteUninstaller "$INSTDIR\uninstall.exe"

  ; pinholed as an automatic LocalSystem service, restarted on failure; started now.
  !insertmacro MustRun '"$INSTDIR\pinholed.exe" service install' "Registering the Pinhole service"
  !insertmacro MustRun '"$INSTDIR\pinholed.exe" service start' "Starting the Pinhole service"

  SetShellVarContext all
  CreateShortCut "$SMPROGRAMS\Pinhole.lnk" "$INSTDIR\pinhole-app.exe" "" "$INSTDIR\pinhole.ico"

  WriteRegStr HKLM "${UNINSTALL_KEY}" "DisplayName" "Pinhole"
  WriteRegStr HKLM "${UNINSTALL_KEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKLM "${UNINSTALL_KEY}" "Publisher" "Pinhole"
  WriteRegStr HKLM "${UNINSTALL_KEY}" "DisplayIcon" "$INSTDIR\pinhole.ico"
  WriteRegStr HKLM "${UNINSTALL_KEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKLM "${UNINSTALL_KEY}" "UninstallString" '"$INSTDIR\uninstall.exe"'
  WriteRegStr HKLM "${UNINSTALL_KEY}" "QuietUninstallString" '"$INSTDIR\uninstall.exe" /S'
  WriteRegDWORD HKLM "${UNINSTALL_KEY}" "NoModify" 1
  WriteRegDWORD HKLM "${UNINSTALL_KEY}" "NoRepair" 1
SectionEnd

Section "Uninstall"
  ; The service first (stopping it takes the tunnel and its adapter down), then the app.
  nsExec::ExecToLog '"$INSTDIR\pinholed.exe" service uninstall'
  Pop $0
  nsExec::ExecToLog 'taskkill /F /IM pinhole-app.exe'
  Pop $0

  Delete "$INSTDIR\pinholed.exe"
  Delete "$INSTDIR\pinhole.exe"
  Delete "$INSTDIR\pinhole-app.exe"
  Delete "$INSTDIR\WebView2Loader.dll"
  Delete "$INSTDIR\wintun.dll"
  Delete "$INSTDIR\pinhole.ico"
  Delete "$INSTDIR\uninstall.exe"
  RMDir "$INSTDIR"

  SetShellVarContext all
  Delete "$SMPROGRAMS\Pinhole.lnk"
  DeleteRegKey HKLM "${UNINSTALL_KEY}"

  ; This device's identity (node key, registration) and pinholed's log. Asked when run by a
  ; person; removed when silent: an uninstall leaves nothing behind.
  MessageBox MB_YESNO|MB_ICONQUESTION "Also remove this device's Pinhole identity and logs?$\n(Keep them to reinstall as the same device.)" /SD IDYES IDNO keep
    RMDir /r "$APPDATA\Pinhole"
  keep:
SectionEnd
