;; malicious: declares 640 MiB of initial memory (over the 512 MiB default).
(module
  (memory (export "memory") 10240)
  (func (export "_start")))
