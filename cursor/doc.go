// Package cursor lets downstream consumers hop from one cluster version's
// topic to the next (app-pg15 → app-pg17) without losing or repeating a change.
//
// # What it will hold
//
// Cursor rows written through the pipeline that mark the same logical position
// in both topics, and the subscription handling that moves a consumer from the
// old topic to the matching message id in the new one.
package cursor
