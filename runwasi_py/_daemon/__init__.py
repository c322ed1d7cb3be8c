"""The long-lived shim daemon process: main loop, orphan reaper, reservations, logging."""
