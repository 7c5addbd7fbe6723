"""The update state machine (Mender-style): states, one transition table, and the machine driving it."""
