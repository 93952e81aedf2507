;; malicious: lists its preopened directories, creates a file in /work, then
;; tries to read /etc/passwd: by absolute path, through `..`, and through a
;; symlink it plants in /work. Prints "<path> ok" (plus the first bytes read)
;; or "<path> denied" for each attempt.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $fd_prestat_dir_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_symlink" (func $path_symlink (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 1024) "\n")
  (data (i32.const 2000) "note.txt")
  (data (i32.const 2016) "/etc/passwd")
  (data (i32.const 2032) "../../../../../../etc/passwd")
  (data (i32.const 2064) "etc/passwd")
  (data (i32.const 2080) "/etc")
  (data (i32.const 2088) "etc")
  (data (i32.const 2096) " ok\n")
  (data (i32.const 2104) " denied\n")
  (data (i32.const 2112) "preopen ")
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $try (param $ptr i32) (param $len i32) (param $oflags i32)
    (call $write (local.get $ptr) (local.get $len))
    (if (i32.eqz
          (call $path_open (i32.const 3) (i32.const 1) (local.get $ptr) (local.get $len)
            (local.get $oflags) (i64.const 0x1fffffff) (i64.const 0x1fffffff) (i32.const 0) (i32.const 48)))
      (then
        (call $write (i32.const 2096) (i32.const 4))
        (i32.store (i32.const 32) (i32.const 16384))
        (i32.store (i32.const 36) (i32.const 64))
        (if (i32.eqz (call $fd_read (i32.load (i32.const 48)) (i32.const 32) (i32.const 1) (i32.const 40)))
          (then (call $write (i32.const 16384) (i32.load (i32.const 40))))))
      (else (call $write (i32.const 2104) (i32.const 8)))))
  (func (export "_start") (local $fd i32)
    (local.set $fd (i32.const 3))
    (block $end
      (loop $each
        (br_if $end (i32.gt_u (local.get $fd) (i32.const 9)))
        (if (i32.eqz (call $fd_prestat_get (local.get $fd) (i32.const 56)))
          (then
            (drop (call $fd_prestat_dir_name (local.get $fd) (i32.const 12288) (i32.load (i32.const 60))))
            (call $write (i32.const 2112) (i32.const 8))
            (call $write (i32.const 12288) (i32.load (i32.const 60)))
            (call $write (i32.const 1024) (i32.const 1))))
        (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
        (br $each)))
    ;; O_CREAT = 1
    (call $try (i32.const 2000) (i32.const 8) (i32.const 1))
    (call $try (i32.const 2016) (i32.const 11) (i32.const 0))
    (call $try (i32.const 2032) (i32.const 28) (i32.const 0))
    (drop (call $path_symlink (i32.const 2080) (i32.const 4) (i32.const 3) (i32.const 2088) (i32.const 3)))
    (call $try (i32.const 2064) (i32.const 10) (i32.const 0))))
