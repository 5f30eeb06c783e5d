/*
 * cmd_validate: "callpush validate FILE...", the event decoder run by hand.
 *
 * Each FILE (or "-" for standard input) holds one call event, the bytes a
 * Kafka message would carry. For each, one line goes to standard output:
 *
 *   FILE: ok (invite, 2 tokens)
 *   FILE: rejected: call_id: longer than 64 bytes
 *
 * The reason is the one the worker would put on the dead letter. A file
 * larger than CMD_VALIDATE_FILE_MAX is rejected without being decoded.
 * Files that cannot be read are reported on standard error.
 *
 * Exit status: 0 when every file was accepted, 1 when any was rejected,
 * 2 on a usage error or when any file could not be read.
 *
 * Thread safety: meant for main() only; it writes to stdout and stderr.
 */
#ifndef CALLPUSH_CMD_VALIDATE_H
#define CALLPUSH_CMD_VALIDATE_H

#define CMD_VALIDATE_FILE_MAX (1024 * 1024)

/* argv[0] is "validate"; the rest are file paths. */
int cmd_validate(int argc, char **argv);

#endif
