"""Running harvest rounds in the background: progress events, cancellation, subprocesses."""
