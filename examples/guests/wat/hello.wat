;; The smallest WASI guest: greets on stdout, notes on stderr, and emits one event by
;; writing a file into its events folder (preopened at /sluice/events; with no other
;; mounts it is file descriptor 3). No toolchain needed: Sluice runs `.wat` files as they
;; are.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)

  (data (i32.const 1024) "hello from a WAT guest\n")          ;; 23 bytes
  (data (i32.const 1056) "(this line went to stderr)\n")      ;; 27 bytes
  (data (i32.const 1088) "0001-greeted.json")                 ;; 17 bytes
  (data (i32.const 1120) "{\"kind\":\"greeted\",\"message\":\"hello\"}") ;; 36 bytes

  ;; Writes len bytes at ptr to fd; returns the WASI errno.
  (func $write (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))

  (func (export "_start") (local $errno i32)
    (drop (call $write (i32.const 1) (i32.const 1024) (i32.const 23)))
    (drop (call $write (i32.const 2) (i32.const 1056) (i32.const 27)))
    ;; path_open(events dir, "0001-greeted.json", O_CREAT, FD_WRITE) -> fd at 16
    (local.set $errno (call $path_open (i32.const 3) (i32.const 0)
      (i32.const 1088) (i32.const 17) (i32.const 1)
      (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 16)))
    (if (local.get $errno) (then (call $proc_exit (local.get $errno))))
    (call $proc_exit (call $write (i32.load (i32.const 16)) (i32.const 1120) (i32.const 36)))))
