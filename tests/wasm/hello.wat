;; hello: prints each argv item after argv[0] on its own line, then copies
;; stdin to stdout, then writes "done" to stderr and returns (exit code 0).
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "\n")
  (data (i32.const 1032) "done\n")
  (func $write (param $fd i32) (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $strlen (param $p i32) (result i32) (local $n i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $n))
  (func (export "_start") (local $argc i32) (local $i i32) (local $arg i32) (local $n i32)
    (drop (call $args_sizes_get (i32.const 16) (i32.const 20)))
    (local.set $argc (i32.load (i32.const 16)))
    ;; argv pointers at 4096, strings at 8192 (tests pass a few short args)
    (drop (call $args_get (i32.const 4096) (i32.const 8192)))
    (local.set $i (i32.const 1))
    (block $args_done
      (loop $each
        (br_if $args_done (i32.ge_u (local.get $i) (local.get $argc)))
        (local.set $arg (i32.load (i32.add (i32.const 4096) (i32.mul (local.get $i) (i32.const 4)))))
        (call $write (i32.const 1) (local.get $arg) (call $strlen (local.get $arg)))
        (call $write (i32.const 1) (i32.const 1024) (i32.const 1))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each)))
    (block $eof
      (loop $read
        (i32.store (i32.const 32) (i32.const 16384))
        (i32.store (i32.const 36) (i32.const 65536))
        (br_if $eof (call $fd_read (i32.const 0) (i32.const 32) (i32.const 1) (i32.const 40)))
        (local.set $n (i32.load (i32.const 40)))
        (br_if $eof (i32.eqz (local.get $n)))
        (call $write (i32.const 1) (i32.const 16384) (local.get $n))
        (br $read)))
    (call $write (i32.const 2) (i32.const 1032) (i32.const 5))))
