"""A C2SP tlog-witness (https://c2sp.org/tlog-witness) and the log's side of the protocol.

- `protocol`: the add-checkpoint request body and the 409 size answer;
- `key`: the witness's own Ed25519 cosigning key (`erasure witness init`);
- `state`: the logs it witnesses and the latest checkpoint it cosigned for each (SQLite);
- `service`: the checks of add-checkpoint, without HTTP; `server`: the HTTP server (stdlib);
- `client`: a log submits a checkpoint to a witness; `collect`: the ledger's configured
  witnesses and the cosignatures it gathers on each checkpoint.

Standard library + cryptography only: a witness runs on the auditor's base install.
"""
