import AsterismCLI

Asterism.runAsMain()
