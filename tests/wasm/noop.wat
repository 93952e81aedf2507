;; noop: a WASI command that does nothing (the benchmark's module).
(module
  (memory (export "memory") 1)
  (func (export "_start")))
