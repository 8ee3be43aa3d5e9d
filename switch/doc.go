// Package switchover runs the maintenance-window switch from one cluster to
// the other, and rollback as the same switch in the opposite direction.
//
// The folder is named switch/ after the operation; the package cannot be,
// because switch is a Go keyword.
//
// # What it will hold
//
// The steps a team once ran by hand: fence writes on the old primary, write a
// marker row and wait for it on the new side, set every sequence (logical
// decoding does not carry them), start the reverse flow so rollback stays
// possible, and redirect clients.
package switchover
