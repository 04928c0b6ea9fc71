//! Write-path tests of the core against the in-process emulator.
