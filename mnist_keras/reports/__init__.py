"""What people look at: TensorBoard dashboards, figures, and the HTML report."""
