;; env: prints every environment entry it was given, one per line.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "\n")
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $strlen (param $p i32) (result i32) (local $n i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $n))
  (func (export "_start") (local $count i32) (local $i i32) (local $entry i32)
    (drop (call $environ_sizes_get (i32.const 16) (i32.const 20)))
    (local.set $count (i32.load (i32.const 16)))
    (drop (call $environ_get (i32.const 4096) (i32.const 16384)))
    (block $end
      (loop $each
        (br_if $end (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $entry (i32.load (i32.add (i32.const 4096) (i32.mul (local.get $i) (i32.const 4)))))
        (call $write (local.get $entry) (call $strlen (local.get $entry)))
        (call $write (i32.const 1024) (i32.const 1))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $each)))))
