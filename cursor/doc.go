// Package cursor lets downstream consumers read one change stream across
// pgtandem's switches: the topic of the cluster that takes the writes (e.g.
// app-pg15), up to the cut of the switch that moved them, then the next
// cluster's topic (app-pg17) from its cut, and back at a rollback, without
// losing or repeating a change.
//
// # Cursor rows
//
// Every switch writes two rows into pgtandem.cursor ([Table]), a table that
// travels like any other, so each row is in-band in the topic of the
// cluster it is written on ([Mark]):
//
//   - a [Cut] row on the target, inside the write pause, before the target
//     takes any client write: its frame is the cut in the target's topic;
//   - a [Hop] row on the source, once the switch found the cut frame
//     ([FindCut]): it names the cut frame's message id, so a consumer of the
//     source's topic learns where to continue.
//
// Message ids are an [ID] in text form, and a consumer's place is a
// [Position]: a cluster and the last message processed in its topic.
//
// # Consumer
//
// [Consumer] reads the stream and hops by itself at each Hop row. Exactly
// once comes from the application storing each [Batch]'s Position with the
// batch's effects and starting from the last one ([Config].Start). A
// message the consumer must seek to and that retention deleted is a
// [*LostError], never a silent jump.
//
// # Subscriptions
//
// [Prepare] gives each durable subscription of a switch's source topic one
// of the same name on the target's topic at the cut, so that retention
// keeps what a late consumer still needs; [Status] tells how far each
// subscription is from the cut. `pgtandem cursor prepare` and `pgtandem
// cursor status` run them; docs/consumers.md is the guide.
package cursor
