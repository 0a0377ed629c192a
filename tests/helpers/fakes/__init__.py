"""Local fakes of real payment gateways, speaking their wire protocols over loopback HTTP."""
