"""Who is online, on how many devices, and when they were last seen (across instances)."""
