"""The certificate: its typed schema, the guarantee's mathematics, the printed statements, reading and writing,
``pacverify check`` and the CI gate."""
