"""wavae.train"""
