# Check and unpack Linea's payload archives; run by the installer (linea.nsi), Windows PowerShell 5.1.
# The manifest lists "<sha256>  <archive name>" per line (sha256sum's format). Every archive is
# checked before any is unpacked, so a damaged download leaves the installation untouched.
# Exit codes: 0 done, 2 an archive is missing, 3 an archive is damaged, 4 unpacking failed.
# .NET's ZipFile reads and writes Unicode paths and ZIP64, which tar.exe and Expand-Archive do
# not do reliably on every Windows 10 (non-ASCII user names, archives over 4 GB).
param(
    [Parameter(Mandatory = $true)][string]$Manifest,
    [Parameter(Mandatory = $true)][string]$Source,
    [Parameter(Mandatory = $true)][string]$Target
)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$Source = [System.IO.Path]::GetFullPath($Source)
$Target = [System.IO.Path]::GetFullPath($Target)

$entries = @()
foreach ($line in [System.IO.File]::ReadAllLines($Manifest)) {
    if ($line.Trim() -eq '') { continue }
    $hash, $name = $line -split '\s+\*?', 2
    $entries += [pscustomobject]@{ Hash = $hash.ToUpperInvariant(); Path = Join-Path $Source $name }
}

foreach ($entry in $entries) {
    if (-not (Test-Path -LiteralPath $entry.Path -PathType Leaf)) {
        Write-Output "Missing: $($entry.Path)"
        exit 2
    }
    Write-Output "Checking $($entry.Path)"
    $actual = (Get-FileHash -LiteralPath $entry.Path -Algorithm SHA256).Hash
    if ($actual -ne $entry.Hash) {
        Write-Output "Damaged: $($entry.Path) has SHA-256 $actual, expected $($entry.Hash)"
        exit 3
    }
}

try {
    Add-Type -AssemblyName System.IO.Compression, System.IO.Compression.FileSystem
    $root = $Target.TrimEnd('\') + '\'
    foreach ($entry in $entries) {
        Write-Output "Unpacking $($entry.Path)"
        $zip = [System.IO.Compression.ZipFile]::OpenRead($entry.Path)
        try {
            foreach ($item in $zip.Entries) {
                $destination = [System.IO.Path]::GetFullPath((Join-Path $Target $item.FullName))
                if (-not $destination.StartsWith($root, [System.StringComparison]::OrdinalIgnoreCase)) {
                    throw "The archive entry '$($item.FullName)' points outside the install folder."
                }
                if ($item.FullName.EndsWith('/')) { continue }
                [void][System.IO.Directory]::CreateDirectory([System.IO.Path]::GetDirectoryName($destination))
                [System.IO.Compression.ZipFileExtensions]::ExtractToFile($item, $destination, $true)
            }
        } finally {
            $zip.Dispose()
        }
    }
} catch {
    Write-Output "Unpacking failed: $($_.Exception.Message)"
    exit 4
}
exit 0
