"""The programs: thin adapters from a command line to the layers below.

`main` is cloudtask, `logalyzer` cloudtask-logalyzer, `fleet` the launch and
destroy commands; `streams` and `exits` are what they share (the standard
streams, the table from errors to exit statuses). Nothing outside this
package imports it: a template's own command line (`Task.main`) is its one
caller, by name.
"""
