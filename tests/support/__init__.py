"""What the tests share, in one place (issue 14).

- helpers: run the installed `cloudtask` (or a task template) as a user would;
  the summary line, job output, the sessions directory.
- hosts: SSH test hosts, real sshds in network namespaces (scripts/testhosts too).
- ssh: tests against those hosts: the job script, root's authorized_keys.
- processes: the process table, as a user would read it with ps.
- hubserver, testcloud, libcloud_driver, motoserver: the clouds' test servers.
- sigkill, storecheck, chaos: kill a controller, resume, check what is left.
- report_stores: sessions, real and crafted, for the report tests.
"""
