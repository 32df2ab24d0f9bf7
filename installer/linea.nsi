; Linea's Windows installer (NSIS 3, Unicode). installer/build.py compiles it with makensis,
; on Windows or with Debian's `nsis` package on Linux, passing the defines below with -D.
; The layout it installs and the payload it may unpack are described in installer/README.md.
;
; Required defines:
;   APP_VERSION          0.1.0
;   VI_VERSION           0.1.0.0 (four numbers, for the file's version resource)
;   TARGET               cpu or cuda (shown in the title and file name)
;   PROGRAM_DIR          folder whose contents are installed into $INSTDIR (Linea.exe, _internal)
;   OUT_FILE             the installer to write
;   INSTALL_SIZE_KB      installed size, program and payload, for "Apps & features"
;   MAX_INSTDIR_LENGTH   longest install folder path that keeps every file under 260 characters
; Optional defines:
;   PAYLOAD_MANIFEST     a sha256sum-style list of payload archives shipped beside the installer;
;                        they are checked and unpacked into $INSTDIR after the program is copied
;   VCREDIST             vc_redist.x64.exe to carry inside the installer; without it the
;                        installer looks for vc_redist.x64.exe beside itself when it needs one
;   ICON                 .ico for the installer and uninstaller
;   COMPRESSOR           lzma (default) or zlib

Unicode true
ManifestDPIAware true
ManifestLongPathAware true
; lzma for releases; build.py's --compressor zlib trades size for a faster test build.
!define /IfNDef COMPRESSOR lzma
SetCompressor /SOLID ${COMPRESSOR}
!if "${COMPRESSOR}" == "lzma"
  SetCompressorDictSize 64
!endif

!include LogicLib.nsh
!include FileFunc.nsh
!include x64.nsh
!include nsDialogs.nsh

!define APP_NAME "Linea"
!define PUBLISHER "Linea"
!define UNINSTALL_KEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\Linea"
; QSettings' default place on Windows: removed only when the user asks to delete their data.
!define SETTINGS_KEY "Software\Linea"
!define VC_RUNTIME_KEY "SOFTWARE\Microsoft\VisualStudio\14.0\VC\Runtimes\x64"
; torch's Windows DLLs are built with Visual Studio 2022 and need its runtime (14.40 or newer);
; an older 2015-2019 runtime also says Installed=1, and c10.dll then fails with WinError 1114.
!define VC_RUNTIME_MIN_MINOR 40

Name "${APP_NAME}"
Caption "${APP_NAME} ${APP_VERSION} (${TARGET}) Setup"
OutFile "${OUT_FILE}"
BrandingText "${APP_NAME} ${APP_VERSION}"
ShowInstDetails show
ShowUninstDetails show

VIProductVersion "${VI_VERSION}"
VIAddVersionKey /LANG=1033 "ProductName" "${APP_NAME}"
VIAddVersionKey /LANG=1033 "CompanyName" "${PUBLISHER}"
VIAddVersionKey /LANG=1033 "FileDescription" "${APP_NAME} ${TARGET} installer"
VIAddVersionKey /LANG=1033 "FileVersion" "${APP_VERSION}"
VIAddVersionKey /LANG=1033 "ProductVersion" "${APP_VERSION}"
VIAddVersionKey /LANG=1033 "LegalCopyright" "${PUBLISHER}"

; Per-user by default (no administrator needed, %LOCALAPPDATA%\Programs\Linea); an
; administrator may choose per-machine (Program Files) on the next page or with /AllUsers.
!define MULTIUSER_EXECUTIONLEVEL Highest
!define MULTIUSER_MUI
!define MULTIUSER_INSTALLMODE_COMMANDLINE
!define MULTIUSER_INSTALLMODE_DEFAULT_CURRENTUSER
!define MULTIUSER_USE_PROGRAMFILES64
!define MULTIUSER_INSTALLMODE_INSTDIR "${APP_NAME}"
!define MULTIUSER_INSTALLMODE_INSTDIR_REGISTRY_KEY "${UNINSTALL_KEY}"
!define MULTIUSER_INSTALLMODE_INSTDIR_REGISTRY_VALUENAME "InstallLocation"
!define MULTIUSER_INSTALLMODE_DEFAULT_REGISTRY_KEY "${UNINSTALL_KEY}"
!define MULTIUSER_INSTALLMODE_DEFAULT_REGISTRY_VALUENAME "UninstallString"
!include MultiUser.nsh
!include MUI2.nsh

!ifdef ICON
  !define MUI_ICON "${ICON}"
  !define MUI_UNICON "${ICON}"
!endif
!define MUI_ABORTWARNING

Var UserDataDir
Var UserImagesDir
Var DataCheckbox
Var ImagesCheckbox
Var DeleteData
Var DeleteImages

!insertmacro MUI_PAGE_WELCOME
!insertmacro MULTIUSER_PAGE_INSTALLMODE
!insertmacro MUI_PAGE_COMPONENTS
!define MUI_PAGE_CUSTOMFUNCTION_LEAVE CheckInstallFolder
!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_INSTFILES
!define MUI_FINISHPAGE_RUN
!define MUI_FINISHPAGE_RUN_TEXT "Start ${APP_NAME}"
!define MUI_FINISHPAGE_RUN_FUNCTION StartLinea
!insertmacro MUI_PAGE_FINISH

!insertmacro MUI_UNPAGE_CONFIRM
UninstPage custom un.UserDataPage un.UserDataPageLeave
!insertmacro MUI_UNPAGE_INSTFILES

!insertmacro MUI_LANGUAGE "English"

; ----- checks ---------------------------------------------------------------------------------

Function .onInit
  ${IfNot} ${RunningX64}
    MessageBox MB_OK|MB_ICONSTOP "${APP_NAME} needs 64-bit Windows 10 or 11." /SD IDOK
    Quit
  ${EndIf}
  SetRegView 64
  ; MultiUser sets its default folder over the one given with /D=, so keep that one.
  StrCpy $0 "$INSTDIR"
  !insertmacro MULTIUSER_INIT
  ${If} $0 != ""
    StrCpy $INSTDIR "$0"
  ${EndIf}
FunctionEnd

; Windows' 260-character path limit applies to every file, and the deepest file inside the
; program folder needs (260 - MAX_INSTDIR_LENGTH) characters of it.
Function CheckInstallFolder
  StrLen $0 "$INSTDIR"
  ${If} $0 > ${MAX_INSTDIR_LENGTH}
    MessageBox MB_OK|MB_ICONEXCLAMATION "The folder $\"$INSTDIR$\" is $0 characters long. \
      ${APP_NAME}'s files go up to 260 characters below it, which Windows cannot open. \
      Choose a folder of at most ${MAX_INSTDIR_LENGTH} characters, such as C:\${APP_NAME}." /SD IDOK
    Abort
  ${EndIf}
FunctionEnd

Function IsVCRuntimeCurrent
  ; Pushes 1 when the x64 runtime is installed and new enough, in either registry view.
  StrCpy $2 0
  SetRegView 32
  ReadRegDWORD $0 HKLM "${VC_RUNTIME_KEY}" "Installed"
  ReadRegDWORD $1 HKLM "${VC_RUNTIME_KEY}" "Minor"
  ${If} $0 = 1
  ${AndIf} $1 >= ${VC_RUNTIME_MIN_MINOR}
    StrCpy $2 1
  ${EndIf}
  SetRegView 64
  ReadRegDWORD $0 HKLM "${VC_RUNTIME_KEY}" "Installed"
  ReadRegDWORD $1 HKLM "${VC_RUNTIME_KEY}" "Minor"
  ${If} $0 = 1
  ${AndIf} $1 >= ${VC_RUNTIME_MIN_MINOR}
    StrCpy $2 1
  ${EndIf}
  Push $2
FunctionEnd

Function EnsureVCRuntime
  Call IsVCRuntimeCurrent
  Pop $0
  ${If} $0 = 1
    DetailPrint "The Microsoft Visual C++ runtime is installed."
    Return
  ${EndIf}
  !ifdef VCREDIST
    InitPluginsDir
    File "/oname=$PLUGINSDIR\vc_redist.x64.exe" "${VCREDIST}"
    StrCpy $1 "$PLUGINSDIR\vc_redist.x64.exe"
  !else
    StrCpy $1 "$EXEDIR\vc_redist.x64.exe"
  !endif
  ${IfNot} ${FileExists} "$1"
    MessageBox MB_OKCANCEL|MB_ICONEXCLAMATION "${APP_NAME} needs the Microsoft Visual C++ \
      2015-2022 runtime (x64), and vc_redist.x64.exe is not beside this installer. Install it \
      from Microsoft, then start ${APP_NAME}. Continue without it?" /SD IDCANCEL IDOK done
    Abort "The Microsoft Visual C++ runtime is missing."
  ${EndIf}
  DetailPrint "Installing the Microsoft Visual C++ runtime..."
  ExecWait '"$1" /install /quiet /norestart' $0
  ; 1638: a newer version is already there; 3010 and 1641: installed, restart pending.
  ${If} $0 = 3010
  ${OrIf} $0 = 1641
    SetRebootFlag true
  ${ElseIf} $0 <> 0
  ${AndIf} $0 <> 1638
    MessageBox MB_OKCANCEL|MB_ICONEXCLAMATION "Installing the Microsoft Visual C++ runtime \
      failed (code $0). ${APP_NAME} will not start without it (error: c10.dll, WinError 1114). \
      An administrator can run vc_redist.x64.exe. Continue anyway?" /SD IDCANCEL IDOK done
    Abort "The Microsoft Visual C++ runtime could not be installed (code $0)."
  ${EndIf}
  done:
FunctionEnd

!ifdef PAYLOAD_MANIFEST
; The large parts (GPU libraries, model weights) ship as archives beside the installer, since
; an NSIS installer cannot exceed 2 GB. Each is checked against the SHA-256 carried inside this
; installer before anything is unpacked.
Function InstallPayload
  InitPluginsDir
  File "/oname=$PLUGINSDIR\payload.ps1" "${__FILEDIR__}/payload.ps1"
  File "/oname=$PLUGINSDIR\payload.sha256" "${PAYLOAD_MANIFEST}"
  DetailPrint "Checking and unpacking the payload archives beside the installer..."
  ${DisableX64FSRedirection}
  ; "\." keeps a drive root such as D:\ from ending in a backslash that would escape the quote.
  nsExec::ExecToLog '"$SYSDIR\WindowsPowerShell\v1.0\powershell.exe" -NoProfile \
    -NonInteractive -ExecutionPolicy Bypass -File "$PLUGINSDIR\payload.ps1" \
    -Manifest "$PLUGINSDIR\payload.sha256" -Source "$EXEDIR\." -Target "$INSTDIR\."'
  Pop $0
  ${EnableX64FSRedirection}
  ${If} $0 == 0
    Return
  ${ElseIf} $0 == 2
    StrCpy $1 "A payload archive is missing: keep every Linea-*-payload-*.zip file in the \
      same folder as the installer."
  ${ElseIf} $0 == 3
    StrCpy $1 "A payload archive is damaged (its SHA-256 does not match): download it again."
  ${ElseIf} $0 == 4
    StrCpy $1 "Unpacking a payload archive failed: check free disk space."
  ${Else}
    StrCpy $1 "Windows PowerShell could not check the payload ($0)."
  ${EndIf}
  MessageBox MB_OK|MB_ICONSTOP "$1" /SD IDOK
  Abort "$1"
FunctionEnd
!endif

Function StartLinea
  ; Through Explorer, so the app runs as the user even when the installer was elevated.
  Exec '"$WINDIR\explorer.exe" "$INSTDIR\${APP_NAME}.exe"'
FunctionEnd

; ----- install ----------------------------------------------------------------------------------

Section "${APP_NAME}" SecProgram
  SectionIn RO
  Call CheckInstallFolder
  Call EnsureVCRuntime
  SetOutPath "$INSTDIR"
  ; An update replaces the program whole: no DLL of an older version may survive beside it.
  RMDir /r "$INSTDIR\_internal"
  File /r "${PROGRAM_DIR}/*"
  !ifdef PAYLOAD_MANIFEST
    Call InstallPayload
  !endif
  WriteUninstaller "$INSTDIR\Uninstall.exe"
  CreateShortcut "$SMPROGRAMS\${APP_NAME}.lnk" "$INSTDIR\${APP_NAME}.exe"

  WriteRegStr SHCTX "${UNINSTALL_KEY}" "DisplayName" "${APP_NAME}"
  WriteRegStr SHCTX "${UNINSTALL_KEY}" "DisplayVersion" "${APP_VERSION}"
  WriteRegStr SHCTX "${UNINSTALL_KEY}" "Publisher" "${PUBLISHER}"
  WriteRegStr SHCTX "${UNINSTALL_KEY}" "DisplayIcon" "$INSTDIR\${APP_NAME}.exe"
  WriteRegStr SHCTX "${UNINSTALL_KEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr SHCTX "${UNINSTALL_KEY}" "UninstallString" \
    '"$INSTDIR\Uninstall.exe" /$MultiUser.InstallMode'
  WriteRegStr SHCTX "${UNINSTALL_KEY}" "QuietUninstallString" \
    '"$INSTDIR\Uninstall.exe" /$MultiUser.InstallMode /S'
  WriteRegDWORD SHCTX "${UNINSTALL_KEY}" "EstimatedSize" ${INSTALL_SIZE_KB}
  WriteRegDWORD SHCTX "${UNINSTALL_KEY}" "NoModify" 1
  WriteRegDWORD SHCTX "${UNINSTALL_KEY}" "NoRepair" 1
SectionEnd

Section /o "Desktop shortcut" SecDesktop
  CreateShortcut "$DESKTOP\${APP_NAME}.lnk" "$INSTDIR\${APP_NAME}.exe"
SectionEnd

!insertmacro MUI_FUNCTION_DESCRIPTION_BEGIN
  !insertmacro MUI_DESCRIPTION_TEXT ${SecProgram} "The ${APP_NAME} program and its built-in model."
  !insertmacro MUI_DESCRIPTION_TEXT ${SecDesktop} "A ${APP_NAME} icon on the desktop."
!insertmacro MUI_FUNCTION_DESCRIPTION_END

; ----- uninstall --------------------------------------------------------------------------------

Function un.onInit
  SetRegView 64
  !insertmacro MULTIUSER_UNINIT
  ; The user's own folders, wherever the program was installed: the person running the
  ; uninstaller (in per-machine mode, the administrator who confirmed it).
  SetShellVarContext current
  StrCpy $UserDataDir "$LOCALAPPDATA\${APP_NAME}"
  StrCpy $UserImagesDir "$PICTURES\${APP_NAME}"
  ${If} $MultiUser.InstallMode == "AllUsers"
    SetShellVarContext all
  ${EndIf}
  ; Silent uninstalls keep the user's data unless /DeleteUserData is given.
  StrCpy $DeleteData ${BST_UNCHECKED}
  StrCpy $DeleteImages ${BST_UNCHECKED}
  ${un.GetParameters} $0
  ClearErrors
  ${un.GetOptions} $0 "/DeleteUserData" $1
  ${IfNot} ${Errors}
    StrCpy $DeleteData ${BST_CHECKED}
    StrCpy $DeleteImages ${BST_CHECKED}
  ${EndIf}
FunctionEnd

Function un.UserDataPage
  !insertmacro MUI_HEADER_TEXT "Your images and history" "Choose what to remove besides the program."
  nsDialogs::Create 1018
  Pop $0
  ${NSD_CreateLabel} 0 0 100% 30u "The ${APP_NAME} program will be removed. Your images, \
    history, settings and added models are kept unless you tick them below."
  Pop $0
  ${NSD_CreateCheckbox} 0 36u 100% 20u "Also delete my history, settings, logs and added \
    models ($UserDataDir)"
  Pop $DataCheckbox
  ${NSD_SetState} $DataCheckbox $DeleteData
  ${NSD_CreateCheckbox} 0 60u 100% 20u "Also delete my images ($UserImagesDir)"
  Pop $ImagesCheckbox
  ${NSD_SetState} $ImagesCheckbox $DeleteImages
  nsDialogs::Show
FunctionEnd

Function un.UserDataPageLeave
  ${NSD_GetState} $DataCheckbox $DeleteData
  ${NSD_GetState} $ImagesCheckbox $DeleteImages
FunctionEnd

Section "Uninstall"
  ; Only what the installer put there: the folder itself goes only if nothing else is left in it.
  Delete "$INSTDIR\${APP_NAME}.exe"
  Delete "$INSTDIR\linea-cli.exe"
  RMDir /r "$INSTDIR\_internal"
  Delete "$INSTDIR\Uninstall.exe"
  RMDir "$INSTDIR"
  Delete "$SMPROGRAMS\${APP_NAME}.lnk"
  Delete "$DESKTOP\${APP_NAME}.lnk"
  DeleteRegKey SHCTX "${UNINSTALL_KEY}"
  ${If} $DeleteData = ${BST_CHECKED}
    DetailPrint "Deleting $UserDataDir"
    RMDir /r "$UserDataDir"
    DeleteRegKey HKCU "${SETTINGS_KEY}"
  ${EndIf}
  ${If} $DeleteImages = ${BST_CHECKED}
    DetailPrint "Deleting $UserImagesDir"
    RMDir /r "$UserImagesDir"
  ${EndIf}
SectionEnd
