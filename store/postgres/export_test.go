package postgres

// HeldRefs is heldRefs for the external tests (package postgres_test).
var HeldRefs = heldRefs
