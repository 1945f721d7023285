<#
.SYNOPSIS
    Installs Sandstorm on Windows from this checkout and opens it.

.DESCRIPTION
    Creates a private virtual environment in the prefix, installs the right torch build (CUDA
    when an NVIDIA GPU answers to nvidia-smi, the CPU build otherwise) with the torchvision
    that matches it, installs Sandstorm from this checkout in editable mode (the app reads
    resources\ and models\ from the checkout), adds Start-menu and desktop shortcuts that run
    pythonw (no console window) and opens the app. Re-running upgrades in place. Everything it
    creates is listed in <prefix>\install-manifest.txt, so -Uninstall removes exactly that and
    never the user's models, gallery or settings (those live in %LOCALAPPDATA%\Sandstorm and
    %APPDATA%\Sandstorm).

    Environment knobs (all optional): SANDSTORM_PYTHON (interpreter), SANDSTORM_TORCH
    (auto, cpu, cuda or keep; keep leaves torch and torchvision alone), SANDSTORM_TORCH_INDEX
    (PyTorch CUDA wheel index), SANDSTORM_INSTALL_EXTRA_PIP_ARGS (extra arguments for every
    pip install).

.EXAMPLE
    powershell -ExecutionPolicy Bypass -File installer\install.ps1
.EXAMPLE
    installer\install.ps1 -Uninstall
#>
[CmdletBinding()]
param(
    [string]$Prefix = (Join-Path $env:LOCALAPPDATA 'Sandstorm-app'),
    [switch]$NoLaunch,
    [switch]$Uninstall
)

$ErrorActionPreference = 'Stop'
$Repo = (Resolve-Path (Join-Path $PSScriptRoot '..')).Path
# torch and torchvision are pinned in one place, installer\constraints.txt ("torch==X.Y.Z",
# "torchvision==X.Y.Z"). Each torchvision release works with exactly one torch release.
$Constraints = Join-Path $Repo 'installer\constraints.txt'
function Get-Pinned([string]$Dist) {
    if (Test-Path -LiteralPath $Constraints) {
        foreach ($line in Get-Content -LiteralPath $Constraints) {
            if ($line -match "^\s*$Dist\s*==\s*([0-9][0-9A-Za-z.]*)") { return $Matches[1] }
        }
    }
    Write-Host "error: no $Dist==VERSION line in $Constraints; restore it from a complete copy of Sandstorm" -ForegroundColor Red
    exit 1
}
$TorchVersion = Get-Pinned 'torch'
$TorchvisionVersion = Get-Pinned 'torchvision'
$KeepTorch = ''
$Prefix = [System.IO.Path]::GetFullPath($Prefix)
$Venv = Join-Path $Prefix 'venv'
$Manifest = Join-Path $Prefix 'install-manifest.txt'
$StartMenuLink = Join-Path ([Environment]::GetFolderPath('Programs')) 'Sandstorm.lnk'
$DesktopLink = Join-Path ([Environment]::GetFolderPath('Desktop')) 'Sandstorm.lnk'

# Runs a program and returns its output with errors silenced. Windows PowerShell turns a
# native program's redirected stderr into errors, which 'Stop' would make fatal.
function Invoke-Quiet([string]$Exe, [string[]]$Arguments) {
    $previous = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    try {
        return (& $Exe @Arguments 2>$null)
    } finally {
        $ErrorActionPreference = $previous
    }
}

function Say([string]$Message) { Write-Host "==> $Message" }
function Warn([string]$Message) { Write-Warning $Message }
function Die([string]$Message) {
    Write-Host "error: $Message" -ForegroundColor Red
    exit 1
}

# One entry a line: "<kind> <full path>". file: delete; tree: delete with contents (only the
# venv); dir: delete only when empty.
function Record([string]$Kind, [string]$Path) {
    New-Item -ItemType Directory -Force -Path $Prefix | Out-Null
    Add-Content -LiteralPath $Manifest -Value "$Kind $Path" -Encoding UTF8
}

function Invoke-Uninstall {
    if (-not (Test-Path -LiteralPath $Manifest)) {
        Die "no Sandstorm install found in $Prefix (no install-manifest.txt); pass -Prefix if it is elsewhere"
    }
    Say "Removing the Sandstorm install listed in $Manifest"
    $entries = @(Get-Content -LiteralPath $Manifest -Encoding UTF8 | ForEach-Object {
            if ($_ -match '^(\w+) (.+)$') { [pscustomobject]@{ Kind = $Matches[1]; Path = $Matches[2] } }
        })
    foreach ($entry in $entries) {
        if (-not [System.IO.Path]::IsPathRooted($entry.Path)) { continue }
        switch ($entry.Kind) {
            'file' { Remove-Item -LiteralPath $entry.Path -Force -ErrorAction SilentlyContinue }
            'tree' {
                if ($entry.Path.StartsWith($Prefix + [System.IO.Path]::DirectorySeparatorChar)) {
                    Remove-Item -LiteralPath $entry.Path -Recurse -Force -ErrorAction SilentlyContinue
                } else {
                    Warn "skipping $($entry.Path) (outside the install prefix)"
                }
            }
        }
    }
    Remove-Item -LiteralPath $Manifest -Force
    # Deepest folders first; a folder the user has put something in stays.
    $folders = @($entries | Where-Object { $_.Kind -eq 'dir' } | ForEach-Object { $_.Path }) + $Prefix
    foreach ($folder in ($folders | Sort-Object -Descending -Unique)) {
        if ((Test-Path -LiteralPath $folder) -and -not (Get-ChildItem -LiteralPath $folder -Force)) {
            Remove-Item -LiteralPath $folder -Force
        }
    }
    if (Test-Path -LiteralPath $Prefix) { Warn "$Prefix is not empty; left in place" }
    Say 'Sandstorm is uninstalled. Your models, gallery and settings were kept.'
}

function Find-Python {
    $candidates = @()
    if ($env:SANDSTORM_PYTHON) { $candidates += , @($env:SANDSTORM_PYTHON) }
    $candidates += , @('py', '-3')
    $candidates += , @('python')
    foreach ($candidate in $candidates) {
        $exe = $candidate[0]
        $rest = @($candidate | Select-Object -Skip 1)
        if (-not (Get-Command $exe -ErrorAction SilentlyContinue)) { continue }
        # The Microsoft Store alias "python" prints nothing useful; the version check sorts it out.
        $version = Invoke-Quiet $exe ($rest + @('-c', 'import sys; print("%d.%d" % sys.version_info[:2])'))
        if ($LASTEXITCODE -ne 0 -or -not $version) { continue }
        $parts = "$version".Trim().Split('.')
        if ([int]$parts[0] -gt 3 -or ([int]$parts[0] -eq 3 -and [int]$parts[1] -ge 10)) {
            return , $candidate
        }
        Warn "$exe is Python $version; Sandstorm needs 3.10 or newer"
    }
    Die 'Python 3.10 or newer is needed; install it from https://www.python.org/downloads/ (tick "Add python.exe to PATH") and run this again'
}

function Invoke-Pip {
    $extra = @()
    if ($env:SANDSTORM_INSTALL_EXTRA_PIP_ARGS) {
        $extra = $env:SANDSTORM_INSTALL_EXTRA_PIP_ARGS -split '\s+' | Where-Object { $_ }
    }
    # Out-Host: pip's output must not become this function's return value.
    & (Join-Path $Venv 'Scripts\python.exe') -m pip install @extra @args | Out-Host
    return ($LASTEXITCODE -eq 0)
}

# The installed version of a distribution in the venv, or '' when it is not there.
function Get-InstalledVersion([string]$Dist) {
    $version = Invoke-Quiet (Join-Path $Venv 'Scripts\python.exe') @('-c', "import importlib.metadata as m; print(m.version('$Dist'))")
    if ($LASTEXITCODE -eq 0) { return "$version".Trim() }
    return ''
}

# The build label of a version ('cpu' of X.Y.Z+cpu, 'cu130' of X.Y.Z+cu130; '' for PyPI's
# unlabelled builds).
function Get-BuildLabel([string]$Version) {
    $plus = $Version.IndexOf('+')
    if ($plus -lt 0) { return '' }
    return $Version.Substring($plus + 1)
}

# True when the venv has the pinned torch and torchvision, both of the same build (a CUDA
# torchvision beside a CPU torch does not import), whose label is like one of $Labels ('' for
# an unlabelled build).
function Test-PinnedPair([string]$Torch, [string]$Torchvision, [string[]]$Labels) {
    if (-not $Torch -or -not $Torchvision) { return $false }
    if ($Torch.Split('+')[0] -ne $TorchVersion -or $Torchvision.Split('+')[0] -ne $TorchvisionVersion) { return $false }
    $label = Get-BuildLabel $Torch
    if ($label -ne (Get-BuildLabel $Torchvision)) { return $false }
    foreach ($wanted in $Labels) {
        if ($label -like $wanted) { return $true }
    }
    return $false
}

function Get-CudaIndex {
    if ($env:SANDSTORM_TORCH_INDEX) { return $env:SANDSTORM_TORCH_INDEX }
    $text = (Invoke-Quiet 'nvidia-smi' @()) -join "`n"
    if ($text -match 'CUDA Version:\s*(\d+)\.(\d+)') {
        $major = [int]$Matches[1]
        $minor = [int]$Matches[2]
        if ($major -ge 13) { return 'https://download.pytorch.org/whl/cu130' }
        if ($major -eq 12 -and $minor -ge 8) { return 'https://download.pytorch.org/whl/cu128' }
        if ($major -eq 12 -and $minor -ge 6) { return 'https://download.pytorch.org/whl/cu126' }
    }
    return ''
}

function Install-Torch {
    $choice = if ($env:SANDSTORM_TORCH) { $env:SANDSTORM_TORCH } else { 'auto' }
    if ($choice -eq 'auto') {
        $choice = 'cpu'
        if (Get-Command nvidia-smi -ErrorAction SilentlyContinue) {
            Invoke-Quiet 'nvidia-smi' @('-L') | Out-Null
            if ($LASTEXITCODE -eq 0) { $choice = 'cuda' }
        }
    }
    $current = Get-InstalledVersion 'torch'
    $currentTv = Get-InstalledVersion 'torchvision'
    $pair = "torch $TorchVersion and torchvision $TorchvisionVersion"
    # torch and torchvision always go in one pip call, so the resolver cannot pair a
    # torchvision with another torch (or another build of it).
    if ($choice -eq 'keep') {
        if (-not $current) { Die "SANDSTORM_TORCH=keep, but torch is not installed in $Venv" }
        if ($currentTv) {
            Say "Keeping torch $current and torchvision $currentTv"
        } else {
            Say "Keeping torch $current"
            Warn "torchvision is not installed; pip will add the one that goes with torch $current"
        }
        $script:KeepTorch = $current
        return
    }
    if ($choice -eq 'cuda') {
        $index = Get-CudaIndex
        if (-not $index) {
            Warn 'the NVIDIA driver is too old for current CUDA builds of torch; update it for GPU speed'
            $choice = 'cpu'
        } elseif (Test-PinnedPair $current $currentTv @('cu*')) {
            Say "torch $current and torchvision $currentTv (CUDA build) are already installed"
            return
        } else {
            Say "NVIDIA GPU found: installing $pair from $index"
            if (-not (Invoke-Pip "torch==$TorchVersion" "torchvision==$TorchvisionVersion" --index-url $index)) {
                Die "could not install the CUDA build of torch from $index; set SANDSTORM_TORCH=cpu to install the CPU build instead"
            }
            return
        }
    }
    if ($choice -ne 'cpu') { Die "SANDSTORM_TORCH must be auto, cpu, cuda or keep (got '$choice')" }
    if (Test-PinnedPair $current $currentTv @('', 'cpu')) {
        Say "torch $current and torchvision $currentTv (CPU build) are already installed"
        return
    }
    # On Windows the PyPI builds of torch and torchvision are the CPU ones.
    Say "No NVIDIA GPU found: installing the CPU build of $pair"
    if (-not (Invoke-Pip "torch==$TorchVersion" "torchvision==$TorchvisionVersion")) {
        Die "could not install $pair; check your internet connection"
    }
}

# Installs Sandstorm itself without letting pip swap the torch installed above: pinned to
# constraints.txt, or, with SANDSTORM_TORCH=keep, to the torch that is there (pip then picks
# the torchvision that goes with it when there is none).
function Install-App {
    if ($KeepTorch) { return (Invoke-Pip -e $Repo "torch==$KeepTorch") }
    return (Invoke-Pip -c $Constraints -e $Repo)
}

function New-Shortcut([string]$Path) {
    $folder = Split-Path -Parent $Path
    if (-not (Test-Path -LiteralPath $folder)) {
        New-Item -ItemType Directory -Force -Path $folder | Out-Null
        Record dir $folder
    }
    $shell = New-Object -ComObject WScript.Shell
    $link = $shell.CreateShortcut($Path)
    # pythonw runs the window without a console.
    $link.TargetPath = Join-Path $Venv 'Scripts\pythonw.exe'
    $link.Arguments = '-m desktop'
    $link.WorkingDirectory = $Repo
    $link.IconLocation = (Join-Path $Repo 'resources\icons\sandstorm.ico') + ',0'
    $link.Description = 'Sandstorm: make pictures from text with Stable Diffusion, offline'
    $link.Save()
    Record file $Path
}

# ------------------------------------------------------------------------------ main
if ($Uninstall) {
    Invoke-Uninstall
    exit 0
}
if (-not (Test-Path -LiteralPath (Join-Path $Repo 'pyproject.toml'))) {
    Die 'run this script from a Sandstorm checkout (no pyproject.toml next to installer\)'
}

Say "Installing Sandstorm from $Repo into $Prefix"
$python = Find-Python
$pythonExe = $python[0]
$pythonArgs = @($python | Select-Object -Skip 1)
if (-not (Test-Path -LiteralPath $Prefix)) {
    New-Item -ItemType Directory -Force -Path $Prefix | Out-Null
}
$venvPython = Join-Path $Venv 'Scripts\python.exe'
$venvWorks = $false
if (Test-Path -LiteralPath $venvPython) {
    Invoke-Quiet $venvPython @('-c', 'import pip') | Out-Null
    $venvWorks = ($LASTEXITCODE -eq 0)
}
if ($venvWorks) {
    Say "Upgrading the existing environment in $Venv"
} else {
    if (Test-Path -LiteralPath $Venv) {
        Warn "the environment in $Venv is broken; recreating it"
        Remove-Item -LiteralPath $Venv -Recurse -Force
    }
    Say "Creating a private Python environment in $Venv"
    & $pythonExe @pythonArgs -m venv $Venv | Out-Host
    if ($LASTEXITCODE -ne 0) { Die "could not create a virtual environment with $pythonExe" }
    Record tree $Venv
}

Install-Torch
Say 'Installing Sandstorm and its libraries (diffusers, transformers, PySide6)'
if (-not (Install-App)) { Die 'pip could not install Sandstorm; see the messages above' }

Say 'Checking the installed app'
& $venvPython -m desktop --version | Out-Host
if ($LASTEXITCODE -ne 0) { Die "the installed app does not start; run `"$venvPython`" -m desktop --check for details" }

New-Shortcut $StartMenuLink
New-Shortcut $DesktopLink
Say 'Added Sandstorm to the Start menu and the desktop'
$lines = Get-Content -LiteralPath $Manifest -Encoding UTF8 | Sort-Object -Unique
Set-Content -LiteralPath $Manifest -Value $lines -Encoding UTF8

Say 'Done. Start Sandstorm from the Start menu or the desktop shortcut.'
Say "Diagnostics: `"$venvPython`" -m desktop --check   Uninstall: installer\install.ps1 -Uninstall"
if (-not $NoLaunch) {
    Say 'Opening Sandstorm'
    Start-Process -FilePath (Join-Path $Venv 'Scripts\pythonw.exe') -ArgumentList '-m', 'desktop' -WorkingDirectory $Repo
}
