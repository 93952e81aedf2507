;; malicious: grows linear memory by 16 MiB at a time, forever.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop $grow
      (drop (memory.grow (i32.const 256)))
      (br $grow))))
