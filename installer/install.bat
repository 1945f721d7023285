@echo off
rem Runs install.ps1 for people who double-click or use cmd.exe; passes the options through
rem (-Prefix DIR, -NoLaunch, -Uninstall).
powershell -NoProfile -ExecutionPolicy Bypass -File "%~dp0install.ps1" %*
if errorlevel 1 pause
