"""Miaofa (秒发): an automatic card-key delivery shop where every order is a Temporal workflow."""
