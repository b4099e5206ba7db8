"""scikit-learn -> ONNX: conversion, metadata, and the parity proof."""
