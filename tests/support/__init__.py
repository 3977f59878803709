"""What the tests share, in one place (issue 14).

- helpers: run the installed `cloudtask` (or a task template) as a user would;
  the summary line, job output, the sessions directory.
- hosts: SSH test hosts, real sshds in network namespaces (scripts/testhosts too).
- ssh: tests against those hosts: the job script, root's authorized_keys.
- processes: the process table, as a user would read it with ps.
- hubserver, testcloud, libcloud_driver, motoserver: the clouds' test servers;
  clouds: each cloud with its server, for the shared cloud suite.
- sigkill, storecheck, chaos: kill a controller, resume, check what is left.
- full_session, many_workers: the measured runs the suite and benchmarks/ share.
- report_stores: sessions, real and crafted, for the report tests.
- wait: wait_until(condition, limit, what).

The fuzzer is a test package of its own: tests/fuzz/.
"""
