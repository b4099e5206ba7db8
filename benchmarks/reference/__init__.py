"""Servers we compare against. They may import anything; our server never imports them."""
